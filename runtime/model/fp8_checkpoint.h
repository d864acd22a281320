// FP8 (E4M3) weights in Hugging Face checkpoints, in the layouts vLLM loads: `quantization_config`
// with quant_method "compressed-tensors" (float weights of 8 bits, per-tensor or per-channel
// scales in `<name>_scale`), "fbgemm_fp8" (per-channel `<name>_scale`) or "fp8" (transformers'
// fine-grained FP8: a scale per weight_block_size block in `<name>_scale_inv`). A weight is its
// code's value times its scale. Any other method, or an FP8 tensor whose scale is missing or of a
// shape that fits no layout, is refused at load, naming the file and tensor.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvs {

struct Fp8Scheme {
  std::string method;                      // "compressed-tensors", "fbgemm_fp8" or "fp8"
  int64_t block_rows = 0, block_cols = 0;  // "fp8": the scale blocks (weight_block_size)
};

// The scheme of `config`'s quantization_config (nullopt without one). `path` names the file in errors.
absl::StatusOr<std::optional<Fp8Scheme>> ParseFp8Scheme(const nlohmann::json& config, const std::string& path);

// Scales the decoded codes w (rows x cols; cols 1 for a vector) by `scale`, whose shape says the
// layout: one value (per tensor), one per row ([rows] or [rows, 1]: per channel), or a grid of
// blocks (scheme.block_rows x block_cols). `what` names the tensor in errors.
absl::Status ApplyFp8Scale(std::span<float> w, int64_t rows, int64_t cols, std::span<const float> scale,
                           std::span<const int64_t> scale_shape, const Fp8Scheme& scheme, const std::string& what);

}  // namespace kvs
