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
inline float LoadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

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

// The K-quants and IQ4 (layouts in ggml_types.h). Each product and difference is rounded on its
// own, in the order of the `gguf` package's numpy code (d * sc first, then * q, then - dmin * m),
// so the values equal it bit for bit; the build uses no FMA contraction on the host.

void DecodeQ2_K(const uint8_t* b, float* out) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = LoadHalf(b + 80), dmin = LoadHalf(b + 82);
  for (int e = 0; e < 256; ++e) {
    const uint8_t sc = scales[e / 16];
    const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
    const int q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
    out[e] = dl * static_cast<float>(q) - ml;
  }
}

void DecodeQ3_K(const uint8_t* b, float* out) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = LoadHalf(b + 108);
  float dl[16];
  for (int k = 0; k < 16; ++k) {
    const int lo = (sc[k % 8] >> (4 * (k / 8))) & 0xF, hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    dl[k] = d * static_cast<float>(static_cast<int8_t>(lo | hi << 4) - 32);
  }
  for (int e = 0; e < 256; ++e) {
    const int low = (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
    const int high_clear = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;  // 4 is subtracted where the bit is 0
    out[e] = dl[e / 16] * static_cast<float>(low - 4 * high_clear);
  }
}

// Q4_K / Q5_K: eight 6-bit scales and mins packed in 12 bytes.
void ScaleMinK4(const uint8_t* s, int j, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 0x3F;
    m = s[j + 4] & 0x3F;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
    m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

void DecodeQ4_K(const uint8_t* b, bool five_bits, float* out) {
  const float d = LoadHalf(b), dmin = LoadHalf(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (five_bits ? 48 : 16);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ScaleMinK4(scales, j, sc, m);
    const float dj = d * static_cast<float>(sc), mj = dmin * static_cast<float>(m);
    for (int i = 0; i < 32; ++i) {
      const int e = 32 * j + i;
      int q = (qs[32 * (e / 64) + i] >> (4 * (j % 2))) & 0xF;
      if (five_bits) q |= ((qh[i] >> j) & 1) << 4;
      out[e] = dj * static_cast<float>(q) - mj;
    }
  }
}

void DecodeQ6_K(const uint8_t* b, float* out) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = LoadHalf(b + 208);
  for (int e = 0; e < 256; ++e) {
    const int lo = (ql[64 * (e / 128) + e % 64] >> (4 * ((e / 64) % 2))) & 0xF;
    const int hi = (qh[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
    const float dl = d * static_cast<float>(scales[e / 16]);
    out[e] = dl * static_cast<float>(static_cast<int8_t>(lo | hi << 4) - 32);
  }
}

void DecodeQ8_K(const uint8_t* b, float* out) {
  const float d = LoadF32(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 4);
  for (int e = 0; e < 256; ++e) out[e] = d * static_cast<float>(qs[e]);
}

void DecodeIQ4_NL(const uint8_t* b, float* out) {
  const float d = LoadHalf(b);
  for (int i = 0; i < 16; ++i) {
    out[i] = d * static_cast<float>(kIq4Values[b[2 + i] & 0xF]);
    out[i + 16] = d * static_cast<float>(kIq4Values[b[2 + i] >> 4]);
  }
}

void DecodeIQ4_XS(const uint8_t* b, float* out) {
  const float d = LoadHalf(b);
  const uint16_t scales_h = LoadU16(b + 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 8; ++j) {
    const int sc = ((scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((scales_h >> (2 * j)) & 3) << 4);
    const float dl = d * static_cast<float>(static_cast<int8_t>(sc) - 32);
    for (int i = 0; i < 16; ++i) {
      out[32 * j + i] = dl * static_cast<float>(kIq4Values[qs[16 * j + i] & 0xF]);
      out[32 * j + 16 + i] = dl * static_cast<float>(kIq4Values[qs[16 * j + i] >> 4]);
    }
  }
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
    default:
      break;
  }
  // Block types: one block at a time, `block_elems` weights each.
  void (*decode)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case GgmlType::kQ4_0: decode = [](const uint8_t* b, float* w) { Decode4Bit(b, false, w); }; break;
    case GgmlType::kQ4_1: decode = [](const uint8_t* b, float* w) { Decode4Bit(b, true, w); }; break;
    case GgmlType::kQ5_0: decode = [](const uint8_t* b, float* w) { Decode5Bit(b, false, w); }; break;
    case GgmlType::kQ5_1: decode = [](const uint8_t* b, float* w) { Decode5Bit(b, true, w); }; break;
    case GgmlType::kQ8_0: decode = DecodeQ8_0; break;
    case GgmlType::kQ2_K: decode = DecodeQ2_K; break;
    case GgmlType::kQ3_K: decode = DecodeQ3_K; break;
    case GgmlType::kQ4_K: decode = [](const uint8_t* b, float* w) { DecodeQ4_K(b, false, w); }; break;
    case GgmlType::kQ5_K: decode = [](const uint8_t* b, float* w) { DecodeQ4_K(b, true, w); }; break;
    case GgmlType::kQ6_K: decode = DecodeQ6_K; break;
    case GgmlType::kQ8_K: decode = DecodeQ8_K; break;
    case GgmlType::kIQ4_NL: decode = DecodeIQ4_NL; break;
    case GgmlType::kIQ4_XS: decode = DecodeIQ4_XS; break;
    default: break;
  }
  KVS_CHECK_MSG(decode != nullptr, "unhandled GGML type");
#pragma omp parallel for schedule(static)
  for (size_t b = 0; b < blocks; ++b) decode(p + b * info->block_bytes, o + b * info->block_elems);
}

}  // namespace kvs::cpu
