// In-place rotary embedding. One block per token; threads cover (head, pair) with the angle a
// float32 product (as HF and the CPU reference) and an accurate sincos (positions reach 128K+).
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace {

__global__ void RopeKernel(bf16* x, int64_t x_stride, int32_t heads, int32_t head_dim, const int32_t* positions,
                           const float* inv_freq) {
  pdl::WaitForPrevious();
  pdl::AllowNext();
  const int64_t t = blockIdx.x;
  const int32_t half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int32_t i = threadIdx.x; i < heads * half; i += blockDim.x) {
    const int32_t h = i / half;
    const int32_t d = i % half;
    float s, c;
    sincosf(pos * inv_freq[d], &s, &c);
    bf16* xh = x + t * x_stride + static_cast<int64_t>(h) * head_dim;
    const float a = __bfloat162float(xh[d]);
    const float b = __bfloat162float(xh[d + half]);
    xh[d] = __float2bfloat16(a * c - b * s);
    xh[d + half] = __float2bfloat16(b * c + a * s);
  }
}

}  // namespace

cudaError_t LaunchRope(bf16* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  // One thread per (head, pair), up to 1024: a decode step has a single token, so its block
  // must not loop.
  const int pairs = heads * head_dim / 2;
  const int threads = pairs < 1024 ? ((pairs + 31) / 32) * 32 : 1024;
  return pdl::Launch(RopeKernel, static_cast<unsigned>(num_tokens), threads, 0, stream, x, x_stride, heads, head_dim,
                     positions, inv_freq);
}

}  // namespace kvs::cuda
