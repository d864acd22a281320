#include "parallel/sharding_plan.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"

namespace kvs {
namespace {

// The r-th of n even, contiguous parts of [0, total).
Range Part(int32_t total, int32_t n, int32_t r) {
  return Range{static_cast<int32_t>(static_cast<int64_t>(total) * r / n),
               static_cast<int32_t>(static_cast<int64_t>(total) * (r + 1) / n)};
}

}  // namespace

absl::StatusOr<ShardingPlan> PlanSharding(const ModelConfig& c, int32_t tp, int32_t ffn_align) {
  const int32_t max_tp = std::min({c.num_q_heads, c.intermediate_size, c.vocab_size});
  if (tp < 1 || tp > max_tp) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--tp %d cannot shard %s (%d query heads, %d KV heads): every rank needs at least one query head; "
        "valid tp values are 1..%d",
        tp, c.name, c.num_q_heads, c.num_kv_heads, max_tp));
  }
  const int32_t group = c.num_q_heads / c.num_kv_heads;
  ShardingPlan plan;
  plan.tp = tp;
  for (int32_t r = 0; r < tp; ++r) {
    ModelShard s;
    s.q_heads = Part(c.num_q_heads, tp, r);
    s.kv_heads = Range{s.q_heads.begin / group, (s.q_heads.end - 1) / group + 1};
    // In whole blocks where every rank still gets one (else evenly, and the loader says which
    // tensor would split).
    const int32_t units = ffn_align > 1 && c.intermediate_size % ffn_align == 0 ? c.intermediate_size / ffn_align : 0;
    if (units >= tp) {
      const Range u = Part(units, tp, r);
      s.intermediate = Range{u.begin * ffn_align, u.end * ffn_align};
    } else {
      s.intermediate = Part(c.intermediate_size, tp, r);
    }
    s.vocab = Part(c.vocab_size, tp, r);
    plan.ranks.push_back(s);
  }
  return plan;
}

int32_t FfnBlockAlignment(const ModelConfig& c, const WeightSource& source) {
  int32_t align = 1;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const auto t = source.StoredBlockType("model.layers." + std::to_string(l) + ".mlp.down_proj.weight");
    if (t) align = std::max(align, LookupGgmlType(static_cast<uint32_t>(*t))->block_elems);
  }
  return align;
}

int64_t ShardingPlan::KvBytesPerToken(const ModelConfig& c, int32_t rank, int bytes_per_element) const {
  return 2ll * c.num_layers * ranks[rank].kv_heads.size() * c.head_dim * bytes_per_element;
}

std::string ShardingPlan::Describe() const {
  std::string out;
  for (size_t r = 0; r < ranks.size(); ++r) {
    const ModelShard& s = ranks[r];
    absl::StrAppendFormat(&out, "rank %d: q heads [%d, %d), kv heads [%d, %d), ffn rows [%d, %d), vocab [%d, %d)\n", r,
                          s.q_heads.begin, s.q_heads.end, s.kv_heads.begin, s.kv_heads.end, s.intermediate.begin,
                          s.intermediate.end, s.vocab.begin, s.vocab.end);
  }
  return out;
}

}  // namespace kvs
