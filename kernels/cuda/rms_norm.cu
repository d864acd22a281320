// RMSNorm over f32 rows (the residual stream), optionally adding a bf16 update first.
// One block per row; the sum of squares is reduced in float across the block.
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  return total;
}

template <bool kAdd>
__global__ void __launch_bounds__(kThreads) RmsNormKernel(float* x, int64_t x_stride, const bf16* update,
                                                          int64_t update_stride, const bf16* w, int64_t cols,
                                                          float eps, bf16* out, int64_t out_stride) {
  const int64_t r = blockIdx.x;
  float* xr = x + r * x_stride;
  float sum_sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    float v = xr[c];
    if constexpr (kAdd) {
      v += __bfloat162float(update[r * update_stride + c]);
      xr[c] = v;
    }
    sum_sq += v * v;
  }
  const float inv_rms = rsqrtf(BlockSum(sum_sq) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    out[r * out_stride + c] = __float2bfloat16(xr[c] * inv_rms * __bfloat162float(w[c]));
  }
}

}  // namespace

cudaError_t LaunchRmsNorm(const float* x, int64_t x_stride, const bf16* w, int64_t rows, int64_t cols, float eps,
                          bf16* out, int64_t out_stride, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<false><<<rows, kThreads, 0, stream>>>(const_cast<float*>(x), x_stride, nullptr, 0, w, cols, eps,
                                                      out, out_stride);
  return cudaGetLastError();
}

cudaError_t LaunchAddRmsNorm(float* residual, int64_t res_stride, const bf16* x, int64_t x_stride, const bf16* w,
                             int64_t rows, int64_t cols, float eps, bf16* out, int64_t out_stride,
                             cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<true><<<rows, kThreads, 0, stream>>>(residual, res_stride, x, x_stride, w, cols, eps, out,
                                                     out_stride);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
