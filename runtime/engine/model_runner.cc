#include "runtime/engine/model_runner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

struct Sizes {
  int64_t t, s, h, q, kv, qkv, inter, vocab, blocks;
  Sizes(const ModelConfig& c, RunnerLimits l)
      : t(l.max_tokens_per_step), s(l.max_seqs), h(c.hidden_size),
        q(static_cast<int64_t>(c.num_q_heads) * c.head_dim), kv(static_cast<int64_t>(c.num_kv_heads) * c.head_dim),
        qkv(q + 2 * kv), inter(c.intermediate_size), vocab(c.vocab_size),
        blocks(static_cast<int64_t>(l.max_seqs) * l.max_blocks_per_seq) {}
  // Compute-dtype activations; the residual [t, h] and logits [s, vocab] are f32 (below).
  int64_t ActivationElems() const { return t * (2 * h + qkv + q + 3 * inter) + s * h; }
  int64_t F32Elems() const { return t * h + s * vocab; }
  int64_t IndexElems() const { return 3 * t + (s + 1) + s + blocks + s; }
};

}  // namespace

size_t ModelRunner::WorkspaceBytes(const ModelConfig& c, DType dtype, RunnerLimits limits) {
  const Sizes z(c, limits);
  return z.ActivationElems() * DTypeSize(dtype) + (z.F32Elems() + z.IndexElems()) * sizeof(int32_t);
}

absl::StatusOr<ModelRunner> ModelRunner::Create(Backend& backend, const ModelWeights& weights,
                                                const KvCache& cache, RunnerLimits limits) {
  if (limits.max_tokens_per_step <= 0 || limits.max_seqs <= 0 || limits.max_blocks_per_seq <= 0) {
    return absl::InvalidArgumentError("runner limits must be positive");
  }
  ModelRunner r;
  r.backend_ = &backend;
  r.weights_ = &weights;
  r.cache_ = &cache;
  r.limits_ = limits;
  const Sizes z(weights.config(), limits);
  const size_t e = DTypeSize(weights.dtype());
  auto alloc = [&](DeviceBuffer& b, int64_t elems, size_t elem_size) -> absl::Status {
    KVS_ASSIGN_OR_RETURN(b, backend.Allocate(static_cast<size_t>(elems) * elem_size));
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(alloc(r.hidden_, z.t * z.h, e));
  KVS_RETURN_IF_ERROR(alloc(r.residual_, z.t * z.h, sizeof(float)));
  KVS_RETURN_IF_ERROR(alloc(r.normed_, z.t * z.h, e));
  KVS_RETURN_IF_ERROR(alloc(r.qkv_, z.t * z.qkv, e));
  KVS_RETURN_IF_ERROR(alloc(r.attn_, z.t * z.q, e));
  KVS_RETURN_IF_ERROR(alloc(r.gate_up_, z.t * 2 * z.inter, e));
  KVS_RETURN_IF_ERROR(alloc(r.act_, z.t * z.inter, e));
  KVS_RETURN_IF_ERROR(alloc(r.last_, z.s * z.h, e));
  KVS_RETURN_IF_ERROR(alloc(r.logits_, z.s * z.vocab, sizeof(float)));
  KVS_RETURN_IF_ERROR(alloc(r.meta_, z.IndexElems(), 4));
  KVS_RETURN_IF_ERROR(alloc(r.greedy_ids_, z.s, 4));
  r.host_ids_.resize(z.s);
  r.meta_host_.reserve(z.IndexElems());
  r.host_logits_.resize(z.s * z.vocab);
  const ModelConfig& c = weights.config();
  KVS_RETURN_IF_ERROR(backend.ReserveWorkspace(z.t, limits.max_seqs, c.num_q_heads, c.head_dim));
  return r;
}

absl::StatusOr<ModelRunner::Output> ModelRunner::Execute(const StepInput& in, bool greedy_only) {
  const ModelConfig& c = weights_->config();
  const Sizes z(c, limits_);
  const int64_t t = in.num_tokens();
  const int32_t s = in.num_seqs();
  const int64_t n_logits = static_cast<int64_t>(in.logit_rows.size());
  if (t == 0) return Output{};
  if (in.positions.size() != static_cast<size_t>(t) || in.slot_mapping.size() != static_cast<size_t>(t) ||
      in.query_start.size() != static_cast<size_t>(s) + 1 || in.query_start.back() != t ||
      in.block_table.size() != static_cast<size_t>(s) * in.max_blocks_per_seq ||
      in.max_blocks_per_seq > limits_.max_blocks_per_seq || n_logits > limits_.max_seqs) {
    return absl::InvalidArgumentError("malformed step input");
  }
  for (int32_t tok : in.token_ids) {
    if (tok < 0 || tok >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat("token id %d is outside the vocabulary (0..%d)", tok, c.vocab_size - 1));
    }
  }
  if (t > z.t || s > z.s || static_cast<int64_t>(in.block_table.size()) > z.blocks) {
    return absl::InvalidArgumentError(absl::StrFormat("step of %d tokens / %d sequences exceeds the runner's %d / %d", t, s,
                                                      z.t, z.s));
  }
  meta_host_.clear();
  auto pack = [&](const std::vector<int32_t>& v) {
    const int32_t* at = meta_.as<int32_t>() + meta_host_.size();
    meta_host_.insert(meta_host_.end(), v.begin(), v.end());
    return at;
  };
  const int32_t* token_ids = pack(in.token_ids);
  const int32_t* positions = pack(in.positions);
  const int32_t* slots = pack(in.slot_mapping);
  const int32_t* query_start = pack(in.query_start);
  const int32_t* context_len = pack(in.context_len);
  const int32_t* block_table = pack(in.block_table);
  const int32_t* logit_rows = pack(in.logit_rows);
  KVS_RETURN_IF_ERROR(backend_->CopyToDevice(meta_host_.data(), meta_.data(), meta_host_.size() * sizeof(int32_t)));

  AttentionBatch batch;
  batch.num_seqs = s;
  batch.num_tokens = static_cast<int32_t>(t);
  batch.max_blocks_per_seq = in.max_blocks_per_seq;
  batch.max_context_len = *std::max_element(in.context_len.begin(), in.context_len.end());
  for (int32_t i = 0; i < s; ++i) {
    batch.max_query_len = std::max(batch.max_query_len, in.query_start[i + 1] - in.query_start[i]);
  }
  batch.query_start = query_start;
  batch.context_len = context_len;
  batch.block_table = block_table;

  const DType dt = weights_->dtype();
  Backend& b = *backend_;
  const TensorView hidden = hidden_.View(dt, t, z.h);
  const TensorView residual = residual_.View(DType::kF32, t, z.h);
  const TensorView normed = normed_.View(dt, t, z.h);
  const TensorView qkv = qkv_.View(dt, t, z.qkv);
  const TensorView q = qkv.Cols(0, z.q), k = qkv.Cols(z.q, z.kv), v = qkv.Cols(z.q + z.kv, z.kv);
  const TensorView attn = attn_.View(dt, t, z.q);
  const TensorView gate_up = gate_up_.View(dt, t, 2 * z.inter);
  const TensorView act = act_.View(dt, t, z.inter);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const TensorView no_bias{};

  KVS_RETURN_IF_ERROR(b.Embedding(token_ids, weights_->embed(), residual));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights_->layers()[l];
    const TensorView attn_norm = weights_->View(lw.attn_norm, 1, z.h);
    if (l == 0) {
      KVS_RETURN_IF_ERROR(b.RmsNorm(residual, attn_norm, c.rms_norm_eps, normed));
    } else {
      KVS_RETURN_IF_ERROR(b.AddRmsNorm(residual, hidden, attn_norm, c.rms_norm_eps, normed));
    }
    const TensorView bias = c.attention_bias ? weights_->View(lw.qkv_bias, 1, z.qkv) : no_bias;
    KVS_RETURN_IF_ERROR(b.Linear(normed, weights_->View(lw.qkv, z.qkv, z.h), bias, qkv));
    KVS_RETURN_IF_ERROR(b.Rope(q, c.num_q_heads, positions, weights_->rope()));
    KVS_RETURN_IF_ERROR(b.Rope(k, c.num_kv_heads, positions, weights_->rope()));
    const PagedKvView cache = cache_->Layer(l);
    KVS_RETURN_IF_ERROR(b.WriteKv(k, v, slots, cache));
    KVS_RETURN_IF_ERROR(b.PagedAttention(q, cache, batch, scale, attn));
    KVS_RETURN_IF_ERROR(b.Linear(attn, weights_->View(lw.o, z.h, z.q), no_bias, hidden));
    KVS_RETURN_IF_ERROR(b.AddRmsNorm(residual, hidden, weights_->View(lw.ffn_norm, 1, z.h), c.rms_norm_eps, normed));
    KVS_RETURN_IF_ERROR(b.Linear(normed, weights_->View(lw.gate_up, 2 * z.inter, z.h), no_bias, gate_up));
    KVS_RETURN_IF_ERROR(b.SwiGlu(gate_up, act));
    KVS_RETURN_IF_ERROR(b.Linear(act, weights_->View(lw.down, z.h, z.inter), no_bias, hidden));
  }
  if (n_logits == 0) {
    KVS_RETURN_IF_ERROR(b.Synchronize());
    return Output{};
  }
  // Only the rows that will be sampled go through the final norm and the LM head.
  const TensorView last = last_.View(dt, n_logits, z.h);
  KVS_RETURN_IF_ERROR(b.AddRmsNorm(residual, hidden, weights_->final_norm(), c.rms_norm_eps, normed));
  KVS_RETURN_IF_ERROR(b.GatherRows(normed, logit_rows, last));
  const TensorView logits = logits_.View(DType::kF32, n_logits, z.vocab);
  KVS_RETURN_IF_ERROR(b.Linear(last, weights_->lm_head(), no_bias, logits));
  if (greedy_only) {
    KVS_RETURN_IF_ERROR(b.ArgmaxRows(logits, greedy_ids_.as<int32_t>()));
    KVS_RETURN_IF_ERROR(b.CopyToHost(greedy_ids_.data(), host_ids_.data(), n_logits * sizeof(int32_t)));
    return Output{{}, std::span<const int32_t>(host_ids_.data(), n_logits)};
  }
  const std::span<float> host(host_logits_.data(), n_logits * z.vocab);
  KVS_RETURN_IF_ERROR(b.DownloadFloat(logits, host));
  return Output{std::span<const float>(host), {}};
}

}  // namespace kvs
