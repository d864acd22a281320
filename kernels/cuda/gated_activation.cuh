// The gated MLP's activations (SwiGLU's SiLU, GeGLU's tanh GELU), one definition for the kernel of
// their own (elementwise.cu) and the decode GEMV that applies them to its gate and up rows
// (gemv_common.cuh), so that both compute the same bits.
#pragma once

#include <cuda_runtime.h>

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

}  // namespace kvs::cuda
