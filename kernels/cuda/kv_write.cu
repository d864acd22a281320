// Scatter of this step's K and V rows into their pages. One block per token.
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

__global__ void WriteKvKernel(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                              const int32_t* slot_mapping, bf16* k_cache, bf16* v_cache, int64_t width) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_cache[slot * width + c] = k[t * k_stride + c];
    v_cache[slot * width + c] = v[t * v_stride + c];
  }
}

}  // namespace

cudaError_t LaunchWriteKv(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride, int64_t num_tokens,
                          const int32_t* slot_mapping, const PagedKvView& cache, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  WriteKvKernel<<<num_tokens, 128, 0, stream>>>(k, k_stride, v, v_stride, slot_mapping, static_cast<bf16*>(cache.k),
                                                static_cast<bf16*>(cache.v), cache.SlotStride());
  return cudaGetLastError();
}

}  // namespace kvs::cuda
