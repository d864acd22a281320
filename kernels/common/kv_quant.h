// The arithmetic of the quantized KV formats (kernels/common/kv_format.h), shared by the CPU
// reference and the CUDA kernels so both encode a token the same way. The E4M3 codec here is the
// host's; device code uses the hardware conversions of cuda_fp8.h, and a test holds the two equal
// over every code and a sweep of inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/common/host_device.h"

namespace kvs {

inline constexpr float kFp8E4M3Max = 448.0f;
inline constexpr float kInt8Max = 127.0f;
inline constexpr float kInt4Levels = 15.0f;

// The per-(token, head) scale of fp8 and int8 for a row whose largest magnitude is `amax`.
// Zero rows keep scale 0 (and decode to exact zeros).
KVS_HOST_DEVICE inline float Fp8Scale(float amax) { return amax / kFp8E4M3Max; }
KVS_HOST_DEVICE inline float Int8Scale(float amax) { return amax / kInt8Max; }
KVS_HOST_DEVICE inline float SafeInverse(float s) { return s > 0.0f ? 1.0f / s : 0.0f; }

KVS_HOST_DEVICE inline int8_t QuantizeInt8(float x, float inv_scale) {
  const float q = fminf(fmaxf(rintf(x * inv_scale), -kInt8Max), kInt8Max);
  return static_cast<int8_t>(q);
}

// A code of `levels` + 1 values (15: int4, 3: int2) for x with its group's zero (minimum) and
// inverse scale: the channel-quantized formats' keys and values.
KVS_HOST_DEVICE inline uint8_t QuantizeLevels(float x, float zero, float inv_scale, float levels) {
  const float q = fminf(fmaxf(rintf((x - zero) * inv_scale), 0.0f), levels);
  return static_cast<uint8_t>(q);
}

// int4 group code for x with the group's zero (its minimum) and inverse scale.
KVS_HOST_DEVICE inline uint8_t QuantizeInt4(float x, float zero, float inv_scale) {
  const float q = fminf(fmaxf(rintf((x - zero) * inv_scale), 0.0f), kInt4Levels);
  return static_cast<uint8_t>(q);
}

// Float -> E4M3 ("fn": no infinities, 0x7f/0xff NaN), round to nearest even, saturating to
// +-448 like cuda_fp8.h's __NV_SATFINITE.
inline uint8_t FloatToFp8E4M3(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  if (std::isnan(x)) return static_cast<uint8_t>(sign | 0x7f);
  const float a = std::fabs(x);
  if (a > kFp8E4M3Max) return static_cast<uint8_t>(sign | 0x7e);
  if (a < 0.015625f) {  // below 2^-6: subnormal steps of 2^-9 (a code of 8 is the least normal)
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f)));
  }
  int e = 0;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int exp = e - 1;                     // a = (2m) * 2^exp, 2m in [1, 2)
  int mant = static_cast<int>(std::nearbyint((2.0f * m - 1.0f) * 8.0f));
  if (mant == 8) {
    mant = 0;
    ++exp;
  }
  const int code = ((exp + 7) << 3) | mant;
  return static_cast<uint8_t>(sign | (code > 0x7e ? 0x7e : code));
}

inline float Fp8E4M3ToFloat(uint8_t c) {
  const int exp = (c >> 3) & 0xf, mant = c & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) {
    v = NAN;
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);
  } else {
    v = std::ldexp(1.0f + mant / 8.0f, exp - 7);
  }
  return (c & 0x80) ? -v : v;
}

}  // namespace kvs
