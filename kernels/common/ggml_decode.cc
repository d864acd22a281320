#include "kernels/common/ggml_decode.h"

#include <algorithm>
#include <cstring>

#include "kernels/common/half_convert.h"
#include "kernels/common/kv_quant.h"
#include "kernels/common/status_macros.h"
#include "kernels/common/thread_pool.h"

namespace kvs {
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

// Each unpacker writes one block as q[e] (int8), scale[e / 16] and, for the types with an
// offset, min[e / 16], so that the weight is scale * q (+ min): the products and differences of the
// `gguf` package's numpy code in its order (d * sc first, then * q, then - dmin * m, written
// + (-(dmin * m)), which IEEE rounds identically), so DequantizeToF32 equals it bit for bit; the
// build uses no FMA contraction here. The loops are shaped (constant trip counts, no division)
// so that the compiler vectorizes them: the fast CPU matmul unpacks weight rows on every step.

void Unpack4Bit(const uint8_t* block, bool has_min, int8_t* q, float* scale, float* min) {
  const float d = LoadHalf(block);
  const uint8_t* qs = block + (has_min ? 4 : 2);
  const int offset = has_min ? 0 : 8;
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>((qs[j] & 0x0f) - offset);
    q[j + 16] = static_cast<int8_t>((qs[j] >> 4) - offset);
  }
  scale[0] = scale[1] = d;
  if (has_min) min[0] = min[1] = LoadHalf(block + 2);
}

void Unpack5Bit(const uint8_t* block, bool has_min, int8_t* q, float* scale, float* min) {
  const float d = LoadHalf(block);
  const uint32_t qh = LoadU32(block + (has_min ? 4 : 2));
  const uint8_t* qs = block + (has_min ? 8 : 6);
  const int offset = has_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>(((qs[j] & 0x0f) | (((qh >> j) & 1) << 4)) - offset);
    q[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
  }
  scale[0] = scale[1] = d;
  if (has_min) min[0] = min[1] = LoadHalf(block + 2);
}

void UnpackQ4_0(const uint8_t* b, int8_t* q, float* s, float* m) { Unpack4Bit(b, false, q, s, m); }
void UnpackQ4_1(const uint8_t* b, int8_t* q, float* s, float* m) { Unpack4Bit(b, true, q, s, m); }
void UnpackQ5_0(const uint8_t* b, int8_t* q, float* s, float* m) { Unpack5Bit(b, false, q, s, m); }
void UnpackQ5_1(const uint8_t* b, int8_t* q, float* s, float* m) { Unpack5Bit(b, true, q, s, m); }

void UnpackQ8_0(const uint8_t* b, int8_t* q, float* scale, float*) {
  std::memcpy(q, b + 2, 32);
  scale[0] = scale[1] = LoadHalf(b);
}

// K-quants: element e = 128 h + 32 s + i (Q2_K, Q3_K, Q6_K) or 32 j + i (Q4_K, Q5_K).
void UnpackQ2_K(const uint8_t* b, int8_t* q, float* scale, float* min) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = LoadHalf(b + 80), dmin = LoadHalf(b + 82);
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int i = 0; i < 32; ++i) q[128 * h + 32 * s + i] = static_cast<int8_t>((qs[32 * h + i] >> (2 * s)) & 3);
  for (int g = 0; g < 16; ++g) {
    scale[g] = d * static_cast<float>(scales[g] & 0xF);
    min[g] = -(dmin * static_cast<float>(scales[g] >> 4));
  }
}

void UnpackQ3_K(const uint8_t* b, int8_t* q, float* scale, float*) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = LoadHalf(b + 108);
  for (int g = 0; g < 16; ++g) {
    const int lo = (sc[g % 8] >> (4 * (g / 8))) & 0xF, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
    scale[g] = d * static_cast<float>(static_cast<int8_t>(lo | hi << 4) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int i = 0; i < 32; ++i) {
        const int low = (qs[32 * h + i] >> (2 * s)) & 3;
        const int high_clear = ((hmask[i] >> (4 * h + s)) & 1) ^ 1;  // 4 is subtracted where the bit is 0
        q[128 * h + 32 * s + i] = static_cast<int8_t>(low - 4 * high_clear);
      }
}

void UnpackQ4_K(const uint8_t* b, bool five_bits, int8_t* q, float* scale, float* min) {
  const float d = LoadHalf(b), dmin = LoadHalf(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (five_bits ? 48 : 16);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ScaleMinK4(scales, j, sc, m);
    scale[2 * j] = scale[2 * j + 1] = d * static_cast<float>(sc);
    min[2 * j] = min[2 * j + 1] = -(dmin * static_cast<float>(m));
    const uint8_t* row = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int i = 0; i < 32; ++i) {
      int v = (row[i] >> shift) & 0xF;
      if (five_bits) v |= ((qh[i] >> j) & 1) << 4;
      q[32 * j + i] = static_cast<int8_t>(v);
    }
  }
}
void UnpackQ4_Kb(const uint8_t* b, int8_t* q, float* s, float* m) { UnpackQ4_K(b, false, q, s, m); }
void UnpackQ5_Kb(const uint8_t* b, int8_t* q, float* s, float* m) { UnpackQ4_K(b, true, q, s, m); }

void UnpackQ6_K(const uint8_t* b, int8_t* q, float* scale, float*) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = LoadHalf(b + 208);
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int i = 0; i < 32; ++i) {
        const int lo = (ql[64 * h + 32 * (s % 2) + i] >> (4 * (s / 2))) & 0xF;
        const int hi = (qh[32 * h + i] >> (2 * s)) & 3;
        q[128 * h + 32 * s + i] = static_cast<int8_t>(static_cast<int8_t>(lo | hi << 4) - 32);
      }
  for (int g = 0; g < 16; ++g) scale[g] = d * static_cast<float>(scales[g]);
}

void UnpackQ8_K(const uint8_t* b, int8_t* q, float* scale, float*) {
  const float d = LoadF32(b);
  std::memcpy(q, b + 4, 256);
  for (int g = 0; g < 16; ++g) scale[g] = d;
}

void UnpackIQ4_NL(const uint8_t* b, int8_t* q, float* scale, float*) {
  for (int i = 0; i < 16; ++i) {
    q[i] = kIq4Values[b[2 + i] & 0xF];
    q[i + 16] = kIq4Values[b[2 + i] >> 4];
  }
  scale[0] = scale[1] = LoadHalf(b);
}

void UnpackIQ4_XS(const uint8_t* b, int8_t* q, float* scale, float*) {
  const float d = LoadHalf(b);
  const uint16_t scales_h = LoadU16(b + 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 8; ++j) {
    const int sc = ((scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((scales_h >> (2 * j)) & 3) << 4);
    scale[2 * j] = scale[2 * j + 1] = d * static_cast<float>(static_cast<int8_t>(sc) - 32);
    for (int i = 0; i < 16; ++i) {
      q[32 * j + i] = kIq4Values[qs[16 * j + i] & 0xF];
      q[32 * j + 16 + i] = kIq4Values[qs[16 * j + i] >> 4];
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
    case GgmlType::kF32: std::memcpy(o, p, out.size() * 4); return;
    case GgmlType::kF16:
      for (size_t i = 0; i < out.size(); ++i) o[i] = Fp16BitsToFloat(LoadU16(p + 2 * i));
      return;
    case GgmlType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) o[i] = Bf16BitsToFloat(LoadU16(p + 2 * i));
      return;
    case GgmlType::kF8_E4M3:  // codes times their block's scale, as an FP8 checkpoint's float read does
      ParallelFor(static_cast<int64_t>(blocks), kParallelWork / kF8BlockElems, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          const uint8_t* b = p + blk * info->block_bytes;
          float scale;
          std::memcpy(&scale, b + kF8BlockElems, 4);
          for (int32_t e = 0; e < kF8BlockElems; ++e) o[blk * kF8BlockElems + e] = Fp8E4M3ToFloat(b[e]) * scale;
        }
      });
      return;
    default: break;
  }
  // Block types: one block at a time, unpacked and then scaled.
  const BlockUnpacker unpack = UnpackerFor(type);
  KVS_CHECK_MSG(unpack.fn != nullptr, "unhandled GGML type");
  const int32_t elems = info->block_elems;
  ParallelFor(static_cast<int64_t>(blocks), kParallelWork / elems, [&](int64_t b0, int64_t b1) {
    int8_t q[kMaxBlockElems];
    float scale[kMaxBlockElems / kUnpackGroup], min[kMaxBlockElems / kUnpackGroup];
    for (int64_t blk = b0; blk < b1; ++blk) {
      unpack.fn(p + blk * info->block_bytes, q, scale, min);
      float* w = o + blk * elems;
      if (unpack.has_min) {
        for (int32_t e = 0; e < elems; ++e)
          w[e] = scale[e / kUnpackGroup] * static_cast<float>(q[e]) + min[e / kUnpackGroup];
      } else {
        for (int32_t e = 0; e < elems; ++e) w[e] = scale[e / kUnpackGroup] * static_cast<float>(q[e]);
      }
    }
  });
}

BlockUnpacker UnpackerFor(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0: return {UnpackQ4_0, false};
    case GgmlType::kQ4_1: return {UnpackQ4_1, true};
    case GgmlType::kQ5_0: return {UnpackQ5_0, false};
    case GgmlType::kQ5_1: return {UnpackQ5_1, true};
    case GgmlType::kQ8_0: return {UnpackQ8_0, false};
    case GgmlType::kQ2_K: return {UnpackQ2_K, true};
    case GgmlType::kQ3_K: return {UnpackQ3_K, false};
    case GgmlType::kQ4_K: return {UnpackQ4_Kb, true};
    case GgmlType::kQ5_K: return {UnpackQ5_Kb, true};
    case GgmlType::kQ6_K: return {UnpackQ6_K, false};
    case GgmlType::kQ8_K: return {UnpackQ8_K, false};
    case GgmlType::kIQ4_NL: return {UnpackIQ4_NL, false};
    case GgmlType::kIQ4_XS: return {UnpackIQ4_XS, false};
    default: return {nullptr, false};
  }
}

}  // namespace kvs
