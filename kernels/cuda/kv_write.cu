// Scatter of this step's K and V rows into their pages. One block per token.
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

// 16-byte copies when rows and strides allow (the usual case: width = kv_heads * head_dim).
__global__ void WriteKvVecKernel(const uint4* k, int64_t k_stride, const uint4* v, int64_t v_stride,
                                 const int32_t* slot_mapping, uint4* k_cache, uint4* v_cache, int64_t width) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_cache[slot * width + c] = k[t * k_stride + c];
    v_cache[slot * width + c] = v[t * v_stride + c];
  }
}

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
  const int64_t width = cache.SlotStride();
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (width % 8 == 0 && k_stride % 8 == 0 && v_stride % 8 == 0 && aligned(k) && aligned(v) && aligned(cache.k) &&
      aligned(cache.v)) {
    WriteKvVecKernel<<<num_tokens, 128, 0, stream>>>(
        reinterpret_cast<const uint4*>(k), k_stride / 8, reinterpret_cast<const uint4*>(v), v_stride / 8, slot_mapping,
        static_cast<uint4*>(cache.k), static_cast<uint4*>(cache.v), width / 8);
    return cudaGetLastError();
  }
  WriteKvKernel<<<num_tokens, 128, 0, stream>>>(k, k_stride, v, v_stride, slot_mapping, static_cast<bf16*>(cache.k),
                                                static_cast<bf16*>(cache.v), cache.SlotStride());
  return cudaGetLastError();
}

}  // namespace kvs::cuda
