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

// The fp16 (scale, zero) pair of the channel-quantized formats for values spanning [lo, hi] with
// `levels` steps, and its floats: a reader uses the rounded pair, so codes are chosen against it.
// `Half` rounds a float to fp16 bits (Round) and reads them back (Value): the host's conversions
// on the CPU, the hardware's on the GPU (equal: kv_codec_test holds them to NVIDIA's).
struct ScaleZero {
  uint16_t s_bits, z_bits;
  float s, z, inv;
};
template <typename Half>
KVS_HOST_DEVICE inline ScaleZero MakeScaleZero(float lo, float hi, float levels, Half half) {
  ScaleZero r;
  r.s_bits = half.Round((hi - lo) / levels);
  r.z_bits = half.Round(lo);
  r.s = half.Value(r.s_bits);
  r.z = half.Value(r.z_bits);
  r.inv = SafeInverse(r.s);
  return r;
}

// The (scale, zero) pair for the values x(0) .. x(n - 1) at `levels` steps: of the range [min, max]
// and 64 shrunk and shifted ones, the one of least squared error, the first found on ties (an
// outlier then saturates instead of coarsening every other value's step). Calibration-free; on
// SmolLM2 it takes int4 from +5.3% to +3.7% perplexity and int2 from +139% to +95%. One code for
// the CPU encoder and the GPU's (kivi_seal.cu, which spreads the candidates over a warp's lanes),
// so both write the same bytes, provided neither compiler fuses multiply-adds (both files are
// built so).
inline constexpr int kFitCandidates = 65;  // [min, max], then 13 shrinks x 5 shifts
// Candidate c (0 .. kFitCandidates - 1) for values spanning [lo, hi], in FitScaleZero's order.
template <typename Half>
KVS_HOST_DEVICE inline ScaleZero FitCandidate(int c, float lo, float hi, float levels, Half half) {
  constexpr float kShrink[] = {1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f, 0.7f, 0.65f, 0.6f, 0.55f, 0.5f, 0.45f, 0.4f};
  constexpr float kShift[] = {0.0f, -0.25f, 0.25f, -0.5f, 0.5f};
  const float a = kShrink[c / 5], shift = kShift[c % 5];
  const float span = (hi - lo) * a, l = lo + (hi - lo - span) * (0.5f + shift);
  return MakeScaleZero(l, l + span, levels, half);
}
// v's squared error once coded and decoded under q: the term FitScaleZero sums.
KVS_HOST_DEVICE inline double FitError(float v, const ScaleZero& q, float levels) {
  const float d = QuantizeLevels(v, q.z, q.inv, levels) * q.s + q.z - v;
  return static_cast<double>(d) * d;
}
template <typename Half, typename X>
KVS_HOST_DEVICE inline ScaleZero FitScaleZero(X x, int32_t n, float levels, Half half) {
  float lo = x(0), hi = x(0);
  for (int32_t i = 1; i < n; ++i) {
    const float v = x(i);
    lo = v < lo ? v : lo;
    hi = hi < v ? v : hi;
  }
  ScaleZero best = MakeScaleZero(lo, hi, levels, half);
  double best_err = 1e300;
  for (int c = 0; c < kFitCandidates; ++c) {
    const ScaleZero q = FitCandidate(c, lo, hi, levels, half);
    double err = 0;
    for (int32_t i = 0; i < n; ++i) err += FitError(x(i), q, levels);
    if (err < best_err) {
      best_err = err;
      best = q;
    }
  }
  return best;
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
