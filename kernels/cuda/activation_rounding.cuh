// The block GEMV's and block GEMM's int8 activations (cuda_kernels.h's QuantizedActivations): one
// definition of the rounding and of where its bytes go, shared by the rounding kernel of its own
// (block_linear.cu) and the kernels that round what they write as they write it (the RMSNorms and
// the gated activations, when CudaBackend asks them to: one kernel a Linear fewer at decode).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda::rounding {

// Where byte e (0-31) of unit u's codes lies in a token's q (units * 32 bytes): in unit order, or
// in the GEMV's order, where each 32 units' codes are their first 16 bytes, then their second 16
// (m units in a short last group: m 16-byte pieces each), so that the GEMV's lanes, on 32
// consecutive units, load a contiguous 512 bytes per piece (half the L1 wavefronts of unit order).
// 32-bit offsets: a token's codes are k <= the GEMV's widest k bytes (which spared the GEMV registers).
__device__ __forceinline__ int CodeOffset(int u, int e, int units, bool gemv_order) {
  if (!gemv_order) return 32 * u + e;
  const int g = u / 32, m = min(32, units - 32 * g);
  return 1024 * g + (e / 16) * m * 16 + (u % 32) * 16 + e % 16;
}

// Rounds unit u (32 activations) of token t into `a`: the unit's lanes are kLanes = 32 / kElems
// consecutive lanes of a warp, aligned to kLanes, lane `part` of them holding activations
// part * kElems .. + kElems - 1 in v. Every lane of the warp must call it (shuffles); `store`
// false for lanes whose unit lies past the row (their values are ignored by their own group only,
// so a group must be all in or all out). The scale is max|x| / 127 and each code the nearest
// integer to x / scale; NaN or Inf in a unit makes its scale NaN (so every output reading it is
// NaN, as on the CPU) and its codes 0. Per 16 activations, sum16 = scale * sum of their codes.
template <int kElems>
__device__ __forceinline__ void RoundUnit(const float (&v)[kElems], bool store, int64_t t, int u, int units,
                                          QuantizedActivations a, bool gemv_order) {
  static_assert(kElems == 1 || kElems == 2 || kElems == 4 || kElems == 8, "a unit's 32 over whole lanes");
  constexpr int kLanes = 32 / kElems;
  const int part = static_cast<int>(threadIdx.x % kLanes);
  float amax = 0.0f;
  int finite = 1;
#pragma unroll
  for (int i = 0; i < kElems; ++i) {
    amax = fmaxf(amax, fabsf(v[i]));
    finite &= isfinite(v[i]) ? 1 : 0;
  }
#pragma unroll
  for (int o = kLanes / 2; o > 0; o /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    finite &= __shfl_xor_sync(0xffffffffu, finite, o);
  }
  const float d = finite ? amax / 127.0f : __int_as_float(0x7fc00000);
  const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
  int q[kElems], s = 0;
#pragma unroll
  for (int i = 0; i < kElems; ++i) {
    q[i] = finite ? __float2int_rn(v[i] * inv) : 0;
    s += q[i];
  }
  // Within each half of 16: the lanes that share it.
#pragma unroll
  for (int o = kLanes / 4; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (!store) return;
  const int e = part * kElems;
  int8_t* codes = a.q + t * units * 32 + CodeOffset(u, e, units, gemv_order);
  if constexpr (kElems == 1) {
    codes[0] = static_cast<int8_t>(q[0]);
  } else {
    // kElems codes of one 16-byte piece (kElems divides 16), kElems-aligned.
    uint32_t packed[(kElems + 3) / 4] = {};
#pragma unroll
    for (int i = 0; i < kElems; ++i) packed[i / 4] |= (static_cast<uint32_t>(q[i]) & 0xffu) << (8 * (i % 4));
    if constexpr (kElems == 2) {
      *reinterpret_cast<uint16_t*>(codes) = static_cast<uint16_t>(packed[0]);
    } else if constexpr (kElems == 4) {
      *reinterpret_cast<uint32_t*>(codes) = packed[0];
    } else {
      *reinterpret_cast<uint2*>(codes) = make_uint2(packed[0], packed[1]);
    }
  }
  if (e % 16 == 0) a.sum16[t * units * 2 + 2 * u + e / 16] = d * static_cast<float>(s);
  if (part == 0) a.d[t * units + u] = d;
}

}  // namespace kvs::cuda::rounding
