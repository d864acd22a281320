#include "runtime/model/fp8_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/common/ggml_types.h"
#include "kernels/common/kv_quant.h"
#include "kernels/common/status_macros.h"
#include "kernels/common/thread_pool.h"

namespace kvs {

absl::StatusOr<std::optional<Fp8Scheme>> ParseFp8Scheme(const nlohmann::json& config, const std::string& path) {
  const auto q = config.find("quantization_config");
  if (q == config.end() || q->is_null()) return std::nullopt;
  const std::string where = path + ": quantization_config";
  if (!q->is_object() || !q->contains("quant_method") || !(*q)["quant_method"].is_string()) {
    return absl::InvalidArgumentError(where + " needs a string quant_method");
  }
  Fp8Scheme s;
  s.method = (*q)["quant_method"].get<std::string>();
  if (s.method == "fbgemm_fp8") return s;
  if (s.method == "fp8") {
    const auto b = q->find("weight_block_size");
    if (b != q->end() && !b->is_null()) {
      if (!b->is_array() || b->size() != 2 || !(*b)[0].is_number_unsigned() || !(*b)[1].is_number_unsigned() ||
          (*b)[0].get<int64_t>() < 1 || (*b)[1].get<int64_t>() < 1) {
        return absl::InvalidArgumentError(where + ".weight_block_size must be two positive integers");
      }
      s.block_rows = (*b)[0].get<int64_t>();
      s.block_cols = (*b)[1].get<int64_t>();
    }
    return s;
  }
  if (s.method == "compressed-tensors") {
    const auto groups = q->find("config_groups");
    if (groups == q->end() || !groups->is_object()) return absl::InvalidArgumentError(where + " needs config_groups");
    for (const auto& [name, g] : groups->items()) {
      const auto w = g.find("weights");
      if (w == g.end() || w->is_null()) continue;  // activations only
      const std::string type = w->value("type", ""), strategy = w->value("strategy", "");
      const int bits = w->value("num_bits", 0);
      if (type != "float" || bits != 8 || (strategy != "tensor" && strategy != "channel" && strategy != "block")) {
        return absl::UnimplementedError(absl::StrFormat(
            "%s.config_groups.%s: weights of type '%s', %d bits, strategy '%s'; kvshard loads FP8 weights (type "
            "float, 8 bits) with per-tensor, per-channel or block scales",
            where, name, type, bits, strategy));
      }
      if (strategy != "block") continue;
      // llm-compressor's FP8_BLOCK: a scale per block_structure [rows, cols] block in `<name>_scale`.
      const auto b = w->find("block_structure");
      if (b == w->end() || !b->is_array() || b->size() != 2 || !(*b)[0].is_number_unsigned() ||
          !(*b)[1].is_number_unsigned() || (*b)[0].get<int64_t>() < 1 || (*b)[1].get<int64_t>() < 1) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s.config_groups.%s.weights: strategy 'block' needs block_structure, two positive integers", where, name));
      }
      const int64_t rows = (*b)[0].get<int64_t>(), cols = (*b)[1].get<int64_t>();
      if (s.block_rows > 0 && (s.block_rows != rows || s.block_cols != cols)) {
        return absl::UnimplementedError(absl::StrFormat(
            "%s.config_groups.%s.weights: block_structure [%d, %d] differs from another group's [%d, %d]; kvshard "
            "loads one block size per checkpoint",
            where, name, rows, cols, s.block_rows, s.block_cols));
      }
      s.block_rows = rows;
      s.block_cols = cols;
    }
    return s;
  }
  return absl::UnimplementedError(absl::StrFormat(
      "%s.quant_method '%s' is not supported (kvshard loads FP8 E4M3 weights: compressed-tensors, fbgemm_fp8, fp8)",
      where, s.method));
}

absl::StatusOr<Fp8ScaleGrid> ResolveFp8Scale(int64_t rows, int64_t cols, std::span<const int64_t> scale_shape,
                                             const Fp8Scheme& scheme, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : scale_shape) n *= d;
  if (n == 1) return Fp8ScaleGrid{std::max<int64_t>(rows, 1), std::max<int64_t>(cols, 1), 1};
  const bool per_row = n == rows && (scale_shape.size() == 1 || (scale_shape.size() == 2 && scale_shape[1] == 1));
  if (per_row) return Fp8ScaleGrid{1, std::max<int64_t>(cols, 1), 1};
  if (scheme.block_rows > 0 && scale_shape.size() == 2) {
    const int64_t br = (rows + scheme.block_rows - 1) / scheme.block_rows, bc = (cols + scheme.block_cols - 1) / scheme.block_cols;
    if (scale_shape[0] == br && scale_shape[1] == bc) return Fp8ScaleGrid{scheme.block_rows, scheme.block_cols, bc};
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: its scale has shape [%s], which fits no FP8 layout for a [%d, %d] weight (one value, one per row, or "
      "one per %dx%d block)",
      what, absl::StrJoin(scale_shape, ", "), rows, cols, scheme.block_rows, scheme.block_cols));
}

bool Fp8GridFitsBlocks(const Fp8ScaleGrid& grid, int64_t cols) {
  return cols % kF8BlockElems == 0 && (grid.col_block == cols || grid.col_block % kF8BlockElems == 0);
}

std::optional<std::vector<uint8_t>> PackFp8Blocks(std::span<const uint8_t> codes, int64_t rows, int64_t cols,
                                                  std::span<const float> scale, const Fp8ScaleGrid& grid) {
  if (!Fp8GridFitsBlocks(grid, cols)) return std::nullopt;
  const int64_t per_row = cols / kF8BlockElems, block_bytes = kF8BlockElems + 4;
  std::vector<uint8_t> out(rows * per_row * block_bytes);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < per_row; ++b) {
      uint8_t* dst = out.data() + (r * per_row + b) * block_bytes;
      std::memcpy(dst, codes.data() + r * cols + b * kF8BlockElems, kF8BlockElems);
      const float s = scale[grid.At(r, b * kF8BlockElems)];
      std::memcpy(dst + kF8BlockElems, &s, 4);
    }
  }
  return out;
}

std::vector<uint8_t> QuantizeToFp8Blocks(std::span<const float> w, int64_t rows, int64_t cols) {
  KVS_CHECK(cols % kF8BlockElems == 0 && static_cast<int64_t>(w.size()) == rows * cols);
  const int64_t blocks = rows * cols / kF8BlockElems, block_bytes = kF8BlockElems + 4;
  std::vector<uint8_t> out(blocks * block_bytes);
  ParallelFor(blocks, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* x = w.data() + b * kF8BlockElems;
      uint8_t* dst = out.data() + b * block_bytes;
      float amax = 0.0f;
      for (int32_t e = 0; e < kF8BlockElems; ++e) amax = std::max(amax, std::fabs(x[e]));
      const float s = Fp8Scale(amax), inv = SafeInverse(s);
      for (int32_t e = 0; e < kF8BlockElems; ++e) dst[e] = FloatToFp8E4M3(x[e] * inv);
      std::memcpy(dst + kF8BlockElems, &s, 4);
    }
  });
  return out;
}

}  // namespace kvs
