// One rotary pair, shared by the in-place rope kernel and the rope fused with the KV write: the
// angle a float32 product (as HF and the CPU reference) and an accurate sincos (positions reach
// 128K+), rounded to bf16 as the rotated q and k are stored.
#pragma once

#include <cuda_bf16.h>

namespace kvs::cuda::rope {

// The angle's sine and cosine.
__device__ __forceinline__ void PairAngle(float pos, float inv_freq, float& s, float& c) {
  sincosf(pos * inv_freq, &s, &c);
}

// (a, b) = elements d and d + D/2 of a head (HF's rotate_half pairing), rotated by the angle whose
// sine and cosine are s and c.
__device__ __forceinline__ void RotatePairBy(float s, float c, __nv_bfloat16& a, __nv_bfloat16& b) {
  const float x = __bfloat162float(a), y = __bfloat162float(b);
  a = __float2bfloat16(x * c - y * s);
  b = __float2bfloat16(y * c + x * s);
}

}  // namespace kvs::cuda::rope
