// On-GPU greedy sampling: one block per row reduces (value, index) pairs, lowest index on ties.
#include <cfloat>

#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ inline void Better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__global__ void __launch_bounds__(kThreads) ArgmaxKernel(const float* logits, int64_t stride, int64_t cols, int32_t first_id,
                                                          int32_t* ids, float* values) {
  const float* row = logits + blockIdx.x * stride;
  float best = -FLT_MAX;
  int idx = 0x7fffffff;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) Better(best, idx, row[c], static_cast<int>(c));
  for (int o = 16; o > 0; o >>= 1) Better(best, idx, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, idx, o));
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  if ((threadIdx.x & 31) == 0) {
    sv[threadIdx.x >> 5] = best;
    si[threadIdx.x >> 5] = idx;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    best = sv[threadIdx.x];
    idx = si[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) Better(best, idx, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (threadIdx.x == 0) {
      ids[blockIdx.x] = first_id + idx;
      if (values != nullptr) values[blockIdx.x] = best;
    }
  }
}

}  // namespace

cudaError_t LaunchArgmaxRows(const float* logits, int64_t stride, int64_t rows, int64_t cols, int32_t first_id,
                             int32_t* ids, float* values, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  ArgmaxKernel<<<rows, kThreads, 0, stream>>>(logits, stride, cols, first_id, ids, values);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
