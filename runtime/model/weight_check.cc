#include "runtime/model/weight_check.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
bool F16NonFinite(uint16_t h) { return (h & 0x7C00) == 0x7C00; }
bool BF16NonFinite(uint16_t h) { return (h & 0x7F80) == 0x7F80; }
bool F32NonFinite(uint32_t f) { return (f & 0x7F800000u) == 0x7F800000u; }

absl::Status Bad(const GgufFile& file, const GgufTensorInfo& t, const char* what, int64_t index) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: tensor '%s' holds a non-finite value (NaN or Inf) at %s %d; the file is corrupt: convert or "
      "quantize it again (--check-weights=off loads it anyway)",
      file.path(), t.name, what, index));
}

}  // namespace

absl::Status CheckGgufWeightsFinite(const GgufFile& file) {
  for (const GgufTensorInfo& t : file.tensors()) {
    const auto info = LookupGgmlType(t.type);
    if (!info) continue;  // refused elsewhere by name
    KVS_ASSIGN_OR_RETURN(std::span<const uint8_t> bytes, file.TensorBytes(t));
    const uint8_t* p = bytes.data();
    const auto n = static_cast<int64_t>(bytes.size());
    switch (info->type) {
      case GgmlType::kF32:
        for (int64_t i = 0; i + 4 <= n; i += 4) {
          if (F32NonFinite(Load32(p + i))) return Bad(file, t, "element", i / 4);
        }
        break;
      case GgmlType::kF16:
      case GgmlType::kBF16: {
        const bool bf = info->type == GgmlType::kBF16;
        for (int64_t i = 0; i + 2 <= n; i += 2) {
          const uint16_t h = Load16(p + i);
          if (bf ? BF16NonFinite(h) : F16NonFinite(h)) return Bad(file, t, "element", i / 2);
        }
        break;
      }
      case GgmlType::kQ8_K:  // an f32 scale first
        for (int64_t i = 0; i + info->block_bytes <= n; i += info->block_bytes) {
          if (F32NonFinite(Load32(p + i))) return Bad(file, t, "block", i / info->block_bytes);
        }
        break;
      default: {
        // A block can hold a non-finite value only in its fp16 scales (ggml_types.h).
        const std::vector<int> at = GgmlHalfScaleOffsets(info->type);
        for (int64_t i = 0; i + info->block_bytes <= n; i += info->block_bytes) {
          for (int off : at) {
            if (F16NonFinite(Load16(p + i + off))) return Bad(file, t, "block", i / info->block_bytes);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvs
