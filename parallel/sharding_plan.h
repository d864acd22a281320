// Megatron-style tensor-parallel layout of one model over `tp` ranks, as plain data.
//
// Query heads are split into contiguous, as-even-as-possible ranges (so attention compute and
// the O projection's rows are balanced); each rank holds the KV heads its query heads read, so
// a KV head whose group straddles ranks is replicated on both, and with tp > KV heads every KV
// head is replicated. KV cache memory per rank is its KV-head count, balanced within one head.
// Column-parallel QKV / gate / up and row-parallel O / down follow the head and intermediate
// ranges; the embedding and LM head are split by vocabulary range. A layout is refused, with
// the valid tp values listed, when some rank would get no query head, FFN row or vocab row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_shard.h"
#include "runtime/model/weight_source.h"

namespace kvs {

struct ShardingPlan {
  int32_t tp = 1;
  std::vector<ModelShard> ranks;
  // Bytes of KV per token on `rank` at `bytes_per_element`.
  int64_t KvBytesPerToken(const ModelConfig& c, int32_t rank, int bytes_per_element) const;
  // Human-readable table, one line per rank (logged at start-up).
  std::string Describe() const;
};

// `ffn_align`: FFN rows are split in whole multiples of it where the intermediate size allows
// (FfnBlockAlignment: a down projection stored in GGML blocks then splits along whole blocks).
absl::StatusOr<ShardingPlan> PlanSharding(const ModelConfig& c, int32_t tp, int32_t ffn_align = 1);

// The block width (weights per block) of the widest GGML block type `source` stores a down
// projection in, or 1 when they are all floats: the FFN split's alignment.
int32_t FfnBlockAlignment(const ModelConfig& c, const WeightSource& source);

}  // namespace kvs
