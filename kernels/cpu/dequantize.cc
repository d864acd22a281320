#include "kernels/cpu/dequantize.h"

#include <cstring>

#include "kernels/common/half_convert.h"
#include "kernels/common/status_macros.h"

namespace kvs::cpu {
namespace {

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float LoadHalf(const uint8_t* p) { return Fp16BitsToFloat(LoadU16(p)); }

// 4-bit blocks: `has_min` selects Q4_1 (q*d + m) over Q4_0 ((q-8)*d).
void Decode4Bit(const uint8_t* block, bool has_min, float* out) {
  const float d = LoadHalf(block);
  const float m = has_min ? LoadHalf(block + 2) : 0.0f;
  const uint8_t* qs = block + (has_min ? 4 : 2);
  const int offset = has_min ? 0 : 8;
  for (int j = 0; j < 16; ++j) {
    out[j] = static_cast<float>((qs[j] & 0x0f) - offset) * d + m;
    out[j + 16] = static_cast<float>((qs[j] >> 4) - offset) * d + m;
  }
}

void Decode5Bit(const uint8_t* block, bool has_min, float* out) {
  const float d = LoadHalf(block);
  const float m = has_min ? LoadHalf(block + 2) : 0.0f;
  const uint32_t qh = LoadU32(block + (has_min ? 4 : 2));
  const uint8_t* qs = block + (has_min ? 8 : 6);
  const int offset = has_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0f) | (((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    out[j] = static_cast<float>(lo - offset) * d + m;
    out[j + 16] = static_cast<float>(hi - offset) * d + m;
  }
}

void DecodeQ8_0(const uint8_t* block, float* out) {
  const float d = LoadHalf(block);
  const int8_t* qs = reinterpret_cast<const int8_t*>(block + 2);
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(qs[j]) * d;
}

}  // namespace

void DequantizeToF32(GgmlType type, std::span<const uint8_t> src, std::span<float> out) {
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  KVS_CHECK(info.has_value());
  const size_t blocks = out.size() / info->block_elems;
  KVS_CHECK(out.size() % info->block_elems == 0);
  KVS_CHECK(src.size() == blocks * info->block_bytes);
  const uint8_t* p = src.data();
  float* o = out.data();
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(o, p, out.size() * 4);
      return;
    case GgmlType::kF16:
      for (size_t i = 0; i < out.size(); ++i) o[i] = Fp16BitsToFloat(LoadU16(p + 2 * i));
      return;
    case GgmlType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) o[i] = Bf16BitsToFloat(LoadU16(p + 2 * i));
      return;
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
#pragma omp parallel for schedule(static)
      for (size_t b = 0; b < blocks; ++b) {
        Decode4Bit(p + b * info->block_bytes, type == GgmlType::kQ4_1, o + b * 32);
      }
      return;
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
#pragma omp parallel for schedule(static)
      for (size_t b = 0; b < blocks; ++b) {
        Decode5Bit(p + b * info->block_bytes, type == GgmlType::kQ5_1, o + b * 32);
      }
      return;
    case GgmlType::kQ8_0:
#pragma omp parallel for schedule(static)
      for (size_t b = 0; b < blocks; ++b) DecodeQ8_0(p + b * info->block_bytes, o + b * 32);
      return;
  }
  KVS_CHECK_MSG(false, "unhandled GGML type");
}

}  // namespace kvs::cpu
