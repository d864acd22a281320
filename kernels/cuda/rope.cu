// In-place rotary embedding, alone or with the KV write of the rotated keys (bf16 and fp16 caches:
// one kernel for both at decode). Blocks of 256 threads per token, a thread per (head, pair)
// (rope.cuh's rotation).
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"

namespace kvs::cuda {
namespace {

// Where the rotated keys go besides qk: nowhere (rope alone), or with v into the token's KV slot
// of a bf16 or fp16 cache.
enum class KvStore { kNone, kBf16, kF16 };

// Rope over q and k heads in place; with a KvStore, the threads of the k heads also store their
// pair's two rotated elements of k and the same two of v in the token's slot (-1: none).
template <KvStore kStore>
__global__ void RopeKernel(bf16* qk, int64_t qk_stride, int32_t heads, int32_t head_dim, const int32_t* positions,
                           const float* inv_freq, int32_t blocks_per_token, const bf16* v, int64_t v_stride,
                           const int32_t* slot_mapping, PagedKvView cache) {
  pdl::WaitForPrevious();
  pdl::AllowNext();
  const int64_t t = blockIdx.x / blocks_per_token;
  const int32_t half = head_dim / 2;
  const int32_t i = (blockIdx.x % blocks_per_token) * blockDim.x + threadIdx.x;
  if (i >= heads * half) return;
  const int32_t h = i / half, d = i % half;
  bf16* xh = qk + t * qk_stride + static_cast<int64_t>(h) * head_dim;
  bf16 a = xh[d], b = xh[d + half];
  rope::RotatePair(static_cast<float>(positions[t]), inv_freq[d], a, b);
  xh[d] = a;
  xh[d + half] = b;
  if constexpr (kStore != KvStore::kNone) {
    const int32_t kv_head = h - (heads - cache.kv_heads);
    if (kv_head < 0) return;  // a query head
    const int64_t slot = slot_mapping[t];
    if (slot < 0) return;
    const int64_t row = cache.RowOffset(slot, kv_head);
    const bf16* vh = v + t * v_stride + static_cast<int64_t>(kv_head) * head_dim;
    const bf16 va = vh[d], vb = vh[d + half];
    if constexpr (kStore == KvStore::kF16) {
      __half* kc = reinterpret_cast<__half*>(static_cast<unsigned char*>(cache.k) + row);
      __half* vc = reinterpret_cast<__half*>(static_cast<unsigned char*>(cache.v) + row);
      kc[d] = __float2half_rn(__bfloat162float(a));
      kc[d + half] = __float2half_rn(__bfloat162float(b));
      vc[d] = __float2half_rn(__bfloat162float(va));
      vc[d + half] = __float2half_rn(__bfloat162float(vb));
    } else {
      bf16* kc = reinterpret_cast<bf16*>(static_cast<unsigned char*>(cache.k) + row);
      bf16* vc = reinterpret_cast<bf16*>(static_cast<unsigned char*>(cache.v) + row);
      kc[d] = a;
      kc[d + half] = b;
      vc[d] = va;
      vc[d + half] = vb;
    }
  }
}

// One thread per (head, pair), in blocks of 256: a decode step has a single token, whose 2,560
// pairs (Llama-3-8B's q and k heads) in one block of 1,024 threads looping took 5 us on an H100.
constexpr int kThreads = 256;
int BlocksPerToken(int32_t heads, int32_t head_dim) { return (heads * head_dim / 2 + kThreads - 1) / kThreads; }

}  // namespace

cudaError_t LaunchRope(bf16* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  const int blocks_per_token = BlocksPerToken(heads, head_dim);
  return pdl::Launch(RopeKernel<KvStore::kNone>, static_cast<unsigned>(num_tokens * blocks_per_token), kThreads, 0,
                     stream, x, x_stride, heads, head_dim, positions, inv_freq, blocks_per_token, nullptr, 0, nullptr,
                     PagedKvView{});
}

cudaError_t LaunchRopeWriteKv(bf16* qk, int64_t qk_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                              const int32_t* positions, const float* inv_freq, const bf16* v, int64_t v_stride,
                              const int32_t* slot_mapping, const PagedKvView& cache, cudaStream_t stream) {
  if (cache.dtype != KvDType::kBF16 && cache.dtype != KvDType::kF16) return cudaErrorInvalidValue;
  if (cache.head_dim != head_dim || cache.kv_heads > heads || head_dim % 2 != 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  const int blocks_per_token = BlocksPerToken(heads, head_dim);
  const auto kernel = cache.dtype == KvDType::kF16 ? RopeKernel<KvStore::kF16> : RopeKernel<KvStore::kBf16>;
  return pdl::Launch(kernel, static_cast<unsigned>(num_tokens * blocks_per_token), kThreads, 0, stream, qk, qk_stride,
                     heads, head_dim, positions, inv_freq, blocks_per_token, v, v_stride, slot_mapping, cache);
}

}  // namespace kvs::cuda
