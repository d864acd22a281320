// The RMSNorm of an f32 row as rms_norm.cu's vector kernel computes it — 512 threads, thread p
// summing the squares of float4s p, p + 512, .. in that order, each warp's sums reduced by xor
// shuffles, the 16 warps' totals added in warp order — written once, so that a block of fewer
// threads (the decode GEMV that fuses the residual add and the norm: gemv_common.cuh) computes the
// same bits by playing several of those threads each.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/activation_rounding.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda::norm {

constexpr int kThreads = 512;
constexpr int kMaxVecPerThread = 8;  // rows up to 512 * 8 * 4 = 16384 floats

__device__ __forceinline__ float4 LoadBf16x4(const bf16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

// Stores v rounded to bf16 and returns what it stored.
__device__ __forceinline__ float4 StoreBf16x4(bf16* p, float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 raw;
  raw.x = *reinterpret_cast<const uint32_t*>(&a);
  raw.y = *reinterpret_cast<const uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = raw;
  const float2 lo = __bfloat1622float2(a), hi = __bfloat1622float2(b);
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// s + the squares of a, with every rounding spelled out (no contraction the compiler might choose
// differently in two kernels).
__device__ __forceinline__ float AddSquares(float s, float4 a) {
  return __fadd_rn(s, __fmaf_rn(a.w, a.w, __fmaf_rn(a.z, a.z, __fmaf_rn(a.y, a.y, __fmul_rn(a.x, a.x)))));
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// out = the normalized value: (x * inv_rms) * g, stored in bf16; returns what it stored.
__device__ __forceinline__ float4 StoreNormalized(bf16* p, float4 x, float inv_rms, float4 g) {
  return StoreBf16x4(p,
                     make_float4(x.x * inv_rms * g.x, x.y * inv_rms * g.y, x.z * inv_rms * g.z, x.w * inv_rms * g.w));
}

// Token t's row x (cols floats, 16-byte aligned, already updated) normalized into out with the
// weights w, and rounded into `round` where round.q is set — by a block of kBlockThreads threads
// (a divisor of 512) playing the vector kernel's 512, thread p being threads p + kBlockThreads m.
// Every thread of the block calls it. x is read through L2 (other blocks wrote it).
template <int kBlockThreads>
__device__ __forceinline__ void NormRowAsVecKernel(const float* x, const bf16* w, int64_t cols, float eps, bf16* out,
                                                   int64_t t, QuantizedActivations round) {
  static_assert(kThreads % kBlockThreads == 0 && kBlockThreads % 32 == 0, "whole warps of the 512");
  constexpr int kPlays = kThreads / kBlockThreads;
  __shared__ float warp_total[kThreads / 32];
  const int64_t vecs = cols / 4;
  const auto* xv = reinterpret_cast<const float4*>(x);
  // Each played thread's sum in its own order (j ascending); the plays' loads of one j in flight together.
  float s[kPlays];
#pragma unroll
  for (int m = 0; m < kPlays; ++m) s[m] = 0.0f;
#pragma unroll 1
  for (int j = 0; j < kMaxVecPerThread && static_cast<int64_t>(j) * kThreads < vecs; ++j) {
    float4 a[kPlays];
#pragma unroll
    for (int m = 0; m < kPlays; ++m) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(kBlockThreads) * m + static_cast<int64_t>(j) * kThreads;
      a[m] = i < vecs ? __ldcg(xv + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int m = 0; m < kPlays; ++m) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(kBlockThreads) * m + static_cast<int64_t>(j) * kThreads;
      if (i < vecs) s[m] = AddSquares(s[m], a[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < kPlays; ++m) {
    const float total = WarpSum(s[m]);
    if (threadIdx.x % 32 == 0) warp_total[(threadIdx.x + kBlockThreads * m) / 32] = total;
  }
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int v = 0; v < kThreads / 32; ++v) total += warp_total[v];
  const float inv_rms = rsqrtf(total / static_cast<float>(cols) + eps);
#pragma unroll 1
  for (int j = 0; j < kMaxVecPerThread && static_cast<int64_t>(j) * kThreads < vecs; ++j) {
#pragma unroll
    for (int m = 0; m < kPlays; ++m) {
      const int64_t first = static_cast<int64_t>(kBlockThreads) * m + static_cast<int64_t>(j) * kThreads;
      if (first >= vecs) break;  // the block's lanes leave together
      const int64_t i = threadIdx.x + first;
      float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (i < vecs) o = StoreNormalized(out + 4 * i, __ldcg(xv + i), inv_rms, LoadBf16x4(w + 4 * i));
      if (round.q != nullptr) {
        const float e[4] = {o.x, o.y, o.z, o.w};
        rounding::RoundUnit<4>(e, i < vecs, t, static_cast<int>(i / 8), static_cast<int>(cols / 32), round, true);
      }
    }
  }
  __syncthreads();  // warp_total is rewritten by the next row
}

}  // namespace kvs::cuda::norm
