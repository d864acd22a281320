// The gated activations of an MLP's gate and up projections, out = act(g) * u: SwiGLU (silu) and
// Gemma's GeGLU (gelu_tanh). One definition for the two kernels that compute them — the
// elementwise kernel over a gate_up matrix (elementwise.cu) and the batch-1 GEMVs that compute g
// and u themselves (bf16_gemv.cu, f8_linear.cu) — so that both give the same bits: g and u are
// rounded to bf16 first, as the GEMV's output would be, the product once more.
#pragma once

#include <cuda_bf16.h>

namespace kvs::cuda {

struct Silu {
  __device__ float operator()(float g) const { return g / (1.0f + __expf(-g)); }
};
struct GeluTanh {
  __device__ float operator()(float g) const {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    return 0.5f * g * (1.0f + tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g)));
  }
};

template <typename Act>
__device__ __forceinline__ __nv_bfloat16 GatedOutput(__nv_bfloat16 g, __nv_bfloat16 u) {
  return __float2bfloat16(Act()(__bfloat162float(g)) * __bfloat162float(u));
}

}  // namespace kvs::cuda
