// A model's weights — or one tensor-parallel rank's shard of them (model_shard.h) — in backend
// memory, in the layout the forward pass wants (sizes are the shard's: Hq = its computed query
// heads, Hk its KV heads, I its FFN rows, V its vocab rows, Ho its owned query heads):
//   embed   [V, hidden]                vocab-parallel
//   qkv     [(Hq + 2 Hk) * D, hidden]  q, k, v projections stacked (one GEMM per layer)
//   o       [hidden, Ho * D]           row-parallel: partial sums, all-reduced by the runner
//   gate_up [2 * I, hidden]            gate and up stacked (one GEMM, then SwiGLU)
//   down    [hidden, I]                row-parallel
// and the rotary table. Loaded tensor by tensor so host memory peaks at one tensor's worth.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_shard.h"
#include "runtime/model/weight_source.h"

namespace kvs {

struct LayerWeights {
  DeviceBuffer attn_norm;  // [1, hidden]
  DeviceBuffer qkv;        // [(Hq + 2Hk) * D, hidden]
  DeviceBuffer qkv_bias;   // [1, (Hq + 2Hk) * D] or empty
  DeviceBuffer o;          // [hidden, Ho * D]
  DeviceBuffer ffn_norm;   // [1, hidden]
  DeviceBuffer gate_up;    // [2I, hidden]
  DeviceBuffer down;       // [hidden, I]
};

class ModelWeights {
 public:
  static absl::StatusOr<ModelWeights> Load(const WeightSource& src, Backend& backend);
  static absl::StatusOr<ModelWeights> Load(const WeightSource& src, Backend& backend, const ModelShard& shard);

  // Backend bytes Load allocates for `shard` at `dtype` (weights and the rotary table): what a
  // capacity plan subtracts before the KV cache.
  static int64_t BytesFor(const ModelConfig& c, const ModelShard& shard, DType dtype);

  // The whole model's configuration.
  const ModelConfig& config() const { return config_; }
  // The shard's: head counts and FFN size as this rank's kernels see them.
  const ModelConfig& local_config() const { return local_; }
  const ModelShard& shard() const { return shard_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  TensorView embed() const;
  TensorView final_norm() const;
  TensorView lm_head() const;  // the embedding when tied
  RopeTable rope() const { return {rope_inv_freq_.as<float>(), config_.head_dim}; }
  TensorView View(const DeviceBuffer& b, int64_t rows, int64_t cols) const { return b.View(dtype_, rows, cols); }
  DType dtype() const { return dtype_; }
  size_t bytes() const { return bytes_; }

 private:
  ModelConfig config_, local_;
  ModelShard shard_;
  DType dtype_ = DType::kF32;
  size_t bytes_ = 0;
  DeviceBuffer embed_, final_norm_, lm_head_, rope_inv_freq_;
  std::vector<LayerWeights> layers_;
};

}  // namespace kvs
