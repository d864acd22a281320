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

// Consecutive rows of a weight matrix stored one way: in the compute dtype, or — on a backend
// whose Linear takes them (Backend::LinearTakesBlocks) — in GGML blocks as the file stores them.
struct WeightPart {
  int64_t first_row = 0, rows = 0;
  size_t offset = 0;                 // bytes into the matrix's buffer
  DType dtype = DType::kF32;         // kBlocks: `blocks` is the GGML type
  GgmlType blocks = GgmlType::kF32;
};

// A weight matrix [rows, cols] in backend memory, as one buffer of one or more parts: a stacked
// QKV from a Q4_K_M file kept in blocks is Q4_K, Q4_K and Q6_K rows, one Linear per part
// (LinearOver); decoded to the compute dtype, it is one part.
struct WeightMatrix {
  DeviceBuffer buffer;
  int64_t rows = 0, cols = 0;
  std::vector<WeightPart> parts;

  TensorView PartView(const WeightPart& p) const;
  // The whole matrix as one view: it must have one part.
  TensorView View() const;
};

// out = x * w^T (+ bias), one Backend::Linear per part of w, each into its columns of out.
absl::Status LinearOver(Backend& backend, TensorView x, const WeightMatrix& w, TensorView bias, TensorView out);

struct LayerWeights {
  DeviceBuffer attn_norm;  // [1, hidden]
  WeightMatrix qkv;        // [(Hq + 2Hk) * D, hidden]
  DeviceBuffer qkv_bias;   // [1, (Hq + 2Hk) * D] or empty
  DeviceBuffer q_norm;     // [1, D] or empty (ModelConfig::qk_norm)
  DeviceBuffer k_norm;     // [1, D] or empty
  WeightMatrix o;          // [hidden, Ho * D]
  DeviceBuffer post_attn_norm;  // [1, hidden] or empty (ModelConfig::sandwich_norms)
  DeviceBuffer ffn_norm;   // [1, hidden]
  WeightMatrix gate_up;    // [2I, hidden]
  WeightMatrix down;       // [hidden, I]
  DeviceBuffer post_ffn_norm;   // [1, hidden] or empty
};

class ModelWeights {
 public:
  static absl::StatusOr<ModelWeights> Load(const WeightSource& src, Backend& backend);
  static absl::StatusOr<ModelWeights> Load(const WeightSource& src, Backend& backend, const ModelShard& shard);

  // Backend bytes Load allocates for `shard` at `dtype` (weights and the rotary table): what a
  // capacity plan subtracts before the KV cache. With `source`, matrices it stores in GGML blocks
  // count at their stored size (what a backend that keeps blocks holds: CUDA, the CPU's fast
  // math); without, all at `dtype`.
  static int64_t BytesFor(const ModelConfig& c, const ModelShard& shard, DType dtype,
                          const WeightSource* source = nullptr);

  // The whole model's configuration.
  const ModelConfig& config() const { return config_; }
  // The shard's: head counts and FFN size as this rank's kernels see them.
  const ModelConfig& local_config() const { return local_; }
  const ModelShard& shard() const { return shard_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  TensorView embed() const;
  TensorView final_norm() const;
  const WeightMatrix& lm_head() const;  // the embedding when tied
  RopeTable rope() const { return {rope_inv_freq_.as<float>(), config_.head_dim}; }
  // Layer l's rotary table: the windowed layers' own when the model has one (Gemma 3).
  RopeTable rope(int32_t layer) const {
    const bool local = config_.LayerWindow(layer) > 0 && rope_local_inv_freq_.data() != nullptr;
    return {(local ? rope_local_inv_freq_ : rope_inv_freq_).as<float>(), config_.head_dim};
  }
  TensorView View(const DeviceBuffer& b, int64_t rows, int64_t cols) const { return b.View(dtype_, rows, cols); }
  DType dtype() const { return dtype_; }
  // Backend bytes the weights take (blocks kept as stored count at their stored size).
  size_t bytes() const { return bytes_; }

 private:
  ModelConfig config_, local_;
  ModelShard shard_;
  DType dtype_ = DType::kF32;
  size_t bytes_ = 0;
  WeightMatrix embed_, lm_head_;
  DeviceBuffer final_norm_, rope_inv_freq_, rope_local_inv_freq_;
  std::vector<LayerWeights> layers_;
};

}  // namespace kvs
