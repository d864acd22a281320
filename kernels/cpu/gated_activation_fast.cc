// The fast CPU backend's gated activations, GeGLU (Gemma's gelu_pytorch_tanh) and SwiGLU (Llama's
// silu), with tanh and silu from an exponential computed by range reduction and a polynomial, in
// plain arithmetic the compiler vectorizes: libm's tanhf and expf are scalar calls per element
// (tanhf was ~10% of a Gemma 3 prefill on the CPU, SwiGLU's expf ~6% of a SmolLM2 one). tanh within
// 2e-7 of the reference's std::tanh and silu within a few roundings of its std::exp form, which
// the tests check; the reference backend keeps libm.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {
namespace {

// e^x for x in [-87, 87]: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor polynomial to r^7
// (relative error < 2e-8 there), 2^n built in the exponent bits (n within [-126, 126]: normal).
inline float ExpReduced(float x) {
  constexpr float kLog2e = std::numbers::log2e_v<float>;
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;  // ln 2 split for exact n ln2
  // Round to nearest by the float adder (1.5 * 2^23): no libm call, so the loop vectorizes.
  constexpr float kRound = 12582912.0f;
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

// tanh(y) = 1 - 2 / (e^{2y} + 1); |y| past 9 is +-1 to float precision (and keeps e^{2y} finite).
inline float TanhFast(float y) {
  const float lo = y < -9.0f ? -9.0f : y;
  const float c = lo > 9.0f ? 9.0f : lo;
  return 1.0f - 2.0f / (ExpReduced(2.0f * c) + 1.0f);
}

// silu(x) = x / (1 + e^-x). Past x = -87 (where e^-x would leave ExpReduced's range) it is -0: the
// reference's is below 2e-36 in size there, and -0 once e^-x overflows (x < -88.7); -x clamped at
// -87 keeps e^-x finite on the right, where silu is x itself to float precision.
inline float SiluReduced(float x) {
  const float lo = x < -87.0f ? -87.0f : x;
  const float c = lo > 87.0f ? 87.0f : lo;
  const float s = x / (1.0f + ExpReduced(-c));
  return x < -87.0f ? -0.0f : s;
}

}  // namespace

float TanhForGelu(float y) { return TanhFast(y); }
float SiluFast(float x) { return SiluReduced(x); }

namespace {

// One row, compiled for AVX2+FMA and the baseline (picked at load by the dynamic linker); SiluRow
// likewise.
__attribute__((target_clones("avx2,fma", "default"))) void GeluRow(const float* gate, const float* up, int64_t n,
                                                                   float* o) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    o[i] = 0.5f * x * (1.0f + TanhFast(k * (x + 0.044715f * x * x * x))) * up[i];
  }
}

__attribute__((target_clones("avx2,fma", "default"))) void SiluRow(const float* gate, const float* up, int64_t n,
                                                                   float* o) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = SiluReduced(gate[i]) * up[i];
}

// row(gate, up, inter, out) over the rows of gate_up [rows, 2 * inter] on the pool.
template <typename RowFn>
void ForEachRow(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out, int64_t out_stride,
                RowFn row) {
  ParallelFor(rows, kParallelWork / std::max<int64_t>(inter, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = gate_up + r * gu_stride;
      row(gate, gate + inter, inter, out + r * out_stride);
    }
  });
}

}  // namespace

void GeluGluFastF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
                    int64_t out_stride) {
  ForEachRow(gate_up, gu_stride, rows, inter, out, out_stride, GeluRow);
}

void SwiGluFastF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
                   int64_t out_stride) {
  ForEachRow(gate_up, gu_stride, rows, inter, out, out_stride, SiluRow);
}

}  // namespace kvs::cpu
