#include "runtime/model/fp8_checkpoint.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

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
      if (type != "float" || bits != 8 || (strategy != "tensor" && strategy != "channel")) {
        return absl::UnimplementedError(absl::StrFormat(
            "%s.config_groups.%s: weights of type '%s', %d bits, strategy '%s'; kvshard loads FP8 weights (type "
            "float, 8 bits) with per-tensor or per-channel scales",
            where, name, type, bits, strategy));
      }
    }
    return s;
  }
  return absl::UnimplementedError(absl::StrFormat(
      "%s.quant_method '%s' is not supported (kvshard loads FP8 E4M3 weights: compressed-tensors, fbgemm_fp8, fp8)",
      where, s.method));
}

absl::Status ApplyFp8Scale(std::span<float> w, int64_t rows, int64_t cols, std::span<const float> scale,
                           std::span<const int64_t> scale_shape, const Fp8Scheme& scheme, const std::string& what) {
  const int64_t n = static_cast<int64_t>(scale.size());
  if (n == 1) {
    for (float& v : w) v *= scale[0];
    return absl::OkStatus();
  }
  const bool per_row = n == rows && (scale_shape.size() == 1 || (scale_shape.size() == 2 && scale_shape[1] == 1));
  if (per_row) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) w[r * cols + c] *= scale[r];
    return absl::OkStatus();
  }
  if (scheme.block_rows > 0 && scale_shape.size() == 2) {
    const int64_t br = (rows + scheme.block_rows - 1) / scheme.block_rows, bc = (cols + scheme.block_cols - 1) / scheme.block_cols;
    if (scale_shape[0] == br && scale_shape[1] == bc) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) w[r * cols + c] *= scale[(r / scheme.block_rows) * bc + c / scheme.block_cols];
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: its scale has shape [%s], which fits no FP8 layout for a [%d, %d] weight (one value, one per row, or "
      "one per %dx%d block)",
      what, absl::StrJoin(scale_shape, ", "), rows, cols, scheme.block_rows, scheme.block_cols));
}

}  // namespace kvs
