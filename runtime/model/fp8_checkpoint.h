// FP8 (E4M3) weights in Hugging Face checkpoints, in the layouts vLLM loads: `quantization_config`
// with quant_method "compressed-tensors" (float weights of 8 bits, per-tensor, per-channel or
// per-block scales in `<name>_scale`; llm-compressor writes these), "fbgemm_fp8" (per-channel `<name>_scale`) or "fp8"
// (transformers' fine-grained FP8: a scale per weight_block_size block in `<name>_scale_inv`). A weight is its code's
// value times its scale: decoded so to float, or kept in 8 bits as kvshard's F8_E4M3 blocks (PackFp8Blocks) where the
// layout has that form. Any other method, or an FP8 tensor whose scale is missing or of a shape that fits no layout, is
// refused at load, naming the file and tensor.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvs {

struct Fp8Scheme {
  std::string method;                      // "compressed-tensors", "fbgemm_fp8" or "fp8"
  // The scale blocks: "fp8"'s weight_block_size, compressed-tensors' block_structure.
  int64_t block_rows = 0, block_cols = 0;
};

// The scheme of `config`'s quantization_config (nullopt without one). `path` names the file in errors.
absl::StatusOr<std::optional<Fp8Scheme>> ParseFp8Scheme(const nlohmann::json& config, const std::string& path);

// Where each weight's scale sits: scale index (r / row_block) * grid_cols + c / col_block.
struct Fp8ScaleGrid {
  int64_t row_block = 1, col_block = 1, grid_cols = 1;
  int64_t At(int64_t r, int64_t c) const { return (r / row_block) * grid_cols + c / col_block; }
};

// The grid of a [rows, cols] weight whose scale has `scale_shape`: one value (per tensor), one per
// row ([rows] or [rows, 1]: per channel), or a grid of blocks (scheme.block_rows x block_cols).
// Any other shape is refused, naming `what`.
absl::StatusOr<Fp8ScaleGrid> ResolveFp8Scale(int64_t rows, int64_t cols, std::span<const int64_t> scale_shape,
                                             const Fp8Scheme& scheme, const std::string& what);

// Whether a [rows, cols] weight whose scales lie on `grid` has the F8_E4M3 form: whole 128-column
// blocks, each under one scale (the whole row's, or the grid's columns are whole blocks).
bool Fp8GridFitsBlocks(const Fp8ScaleGrid& grid, int64_t cols);

// The E4M3 codes of a [rows, cols] weight and their scales as kvshard's F8_E4M3 blocks (128 codes
// and their f32 scale, kernels/common/ggml_types.h): the same weights, code x scale, kept in 8 bits.
// nullopt where the layout has no such form (Fp8GridFitsBlocks); the caller then decodes to float.
std::optional<std::vector<uint8_t>> PackFp8Blocks(std::span<const uint8_t> codes, int64_t rows, int64_t cols,
                                                  std::span<const float> scale, const Fp8ScaleGrid& grid);

// `--quantize fp8`: float weights [rows, cols] (cols whole blocks) as F8_E4M3 blocks, each block's
// scale max|w| / 448 (as the fp8 KV cache scales a row) and its codes rounded to nearest even.
std::vector<uint8_t> QuantizeToFp8Blocks(std::span<const float> w, int64_t rows, int64_t cols);

}  // namespace kvs
