// In-place rotary embedding, alone or with the KV write of the rotated keys (bf16 and fp16 caches:
// one kernel for both at decode). Blocks of 256 threads per token, a thread per 8 pairs of a head
// (or per pair where 16-byte accesses do not fit; rope.cuh's rotation).
#include <cuda_fp16.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"

namespace kvs::cuda {
namespace {

// Where the rotated keys go besides qk: nowhere (rope alone), or with v into the token's KV slot
// of a bf16 or fp16 cache.
enum class KvStore { kNone, kBf16, kF16 };

// kPairs consecutive elements of a head (the first or second of kPairs rotary pairs): one 16-byte
// access for 8 pairs of 2-byte elements, else one element at a time.
template <int kPairs, typename T>
__device__ __forceinline__ void LoadPairs(const T* src, T (&dst)[kPairs]) {
  if constexpr (kPairs * sizeof(T) == 16) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int e = 0; e < kPairs; ++e) dst[e] = src[e];
  }
}
template <int kPairs, typename T>
__device__ __forceinline__ void StorePairs(T* dst, const T (&src)[kPairs]) {
  if constexpr (kPairs * sizeof(T) == 16) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  } else {
#pragma unroll
    for (int e = 0; e < kPairs; ++e) dst[e] = src[e];
  }
}

// The rotated k pairs (a, b) and v's same elements (va, vb) into the cache row at byte `row`.
template <KvStore kStore, int kPairs>
__device__ __forceinline__ void StoreKv(const PagedKvView& cache, int64_t row, int32_t d, int32_t half,
                                        const bf16 (&a)[kPairs], const bf16 (&b)[kPairs], const bf16 (&va)[kPairs],
                                        const bf16 (&vb)[kPairs]) {
  if constexpr (kStore == KvStore::kF16) {
    __half* kc = reinterpret_cast<__half*>(static_cast<unsigned char*>(cache.k) + row);
    __half* vc = reinterpret_cast<__half*>(static_cast<unsigned char*>(cache.v) + row);
    __half ka[kPairs], kb[kPairs], hva[kPairs], hvb[kPairs];
#pragma unroll
    for (int e = 0; e < kPairs; ++e) {
      ka[e] = __float2half_rn(__bfloat162float(a[e]));
      kb[e] = __float2half_rn(__bfloat162float(b[e]));
      hva[e] = __float2half_rn(__bfloat162float(va[e]));
      hvb[e] = __float2half_rn(__bfloat162float(vb[e]));
    }
    StorePairs<kPairs>(kc + d, ka);
    StorePairs<kPairs>(kc + d + half, kb);
    StorePairs<kPairs>(vc + d, hva);
    StorePairs<kPairs>(vc + d + half, hvb);
  } else {
    bf16* kc = reinterpret_cast<bf16*>(static_cast<unsigned char*>(cache.k) + row);
    bf16* vc = reinterpret_cast<bf16*>(static_cast<unsigned char*>(cache.v) + row);
    StorePairs<kPairs>(kc + d, a);
    StorePairs<kPairs>(kc + d + half, b);
    StorePairs<kPairs>(vc + d, va);
    StorePairs<kPairs>(vc + d + half, vb);
  }
}

// Rope over q and k heads in place, kPairs pairs a thread (8 where rows and heads allow 16-byte
// accesses: a pair a thread, with 2-byte accesses, ran at 40% of the copy rate over a prompt's
// 8,192 tokens on an H100); with a KvStore, the threads of the k heads also store their pairs'
// rotated elements of k and the same elements of v in the token's slot (-1: none).
//
// The angles' sines and cosines and the token's slot come before the wait for the previous kernel
// (positions, slots and frequencies are the step's metadata and the model's constants, which no
// kernel of the step writes: pdl.cuh), and q, k and v are loaded together after it, so the wait is
// followed by one round of loads rather than the qk loads, the sincos, then the slot's and v's
// loads: 1.0% off a batch-1 Q4_0 step of the Llama-3-8B shape on an H100 (docs/performance.md).
template <KvStore kStore, int kPairs>
__global__ void RopeKernel(bf16* qk, int64_t qk_stride, int32_t heads, int32_t head_dim, const int32_t* positions,
                           const float* inv_freq, int32_t blocks_per_token, const bf16* v, int64_t v_stride,
                           const int32_t* slot_mapping, PagedKvView cache) {
  const int64_t t = blockIdx.x / blocks_per_token;
  const int32_t half = head_dim / 2, groups = half / kPairs;
  const int32_t i = (blockIdx.x % blocks_per_token) * blockDim.x + threadIdx.x;
  const bool active = i < heads * groups;
  const int32_t h = i / groups, d = (i % groups) * kPairs;
  const int32_t kv_head = h - (heads - cache.kv_heads);  // < 0: a query head
  float sn[kPairs], cs[kPairs];
  int64_t slot = -1;
  if (active) {
    const float pos = static_cast<float>(positions[t]);
#pragma unroll
    for (int e = 0; e < kPairs; ++e) rope::PairAngle(pos, inv_freq[d + e], sn[e], cs[e]);
    if constexpr (kStore != KvStore::kNone) {
      if (kv_head >= 0) slot = slot_mapping[t];
    }
  }
  pdl::StartAfterPrevious();
  if (!active) return;
  bf16* xh = qk + t * qk_stride + static_cast<int64_t>(h) * head_dim;
  bf16 a[kPairs], b[kPairs], va[kPairs], vb[kPairs];
  LoadPairs<kPairs>(xh + d, a);
  LoadPairs<kPairs>(xh + d + half, b);
  const bool store = kStore != KvStore::kNone && slot >= 0;  // kv_head >= 0 where slot was read
  if (store) {
    const bf16* vh = v + t * v_stride + static_cast<int64_t>(kv_head) * head_dim;
    LoadPairs<kPairs>(vh + d, va);
    LoadPairs<kPairs>(vh + d + half, vb);
  }
#pragma unroll
  for (int e = 0; e < kPairs; ++e) rope::RotatePairBy(sn[e], cs[e], a[e], b[e]);
  StorePairs<kPairs>(xh + d, a);
  StorePairs<kPairs>(xh + d + half, b);
  if constexpr (kStore != KvStore::kNone) {
    if (store) StoreKv<kStore, kPairs>(cache, cache.RowOffset(slot, kv_head), d, half, a, b, va, vb);
  }
}

// A thread per kPairs pairs of a head, in blocks of 256: a decode step has a single token, whose
// 2,560 pairs (Llama-3-8B's q and k heads) in one block of 1,024 threads looping took 5 us on an H100.
constexpr int kThreads = 256;
int BlocksPerToken(int32_t heads, int32_t head_dim, int pairs) {
  return (heads * (head_dim / 2 / pairs) + kThreads - 1) / kThreads;
}
// 8 pairs a thread for steps of at least kEightPairsMinTokens tokens where every access is 16-byte
// aligned: half a head a multiple of 8 elements, rows and pointers aligned (the cache's rows are
// head_dim elements, so they are too). A decode step keeps a pair a thread: at one token, 8 pairs
// a thread (2 blocks for Llama-3-8B's heads, 8 sincos each) took 2.7 us a layer against 2.0 in
// the graphed Q4_0 step's timeline (H100).
constexpr int64_t kEightPairsMinTokens = 8;
bool EightPairs(int64_t num_tokens, const void* qk, int64_t qk_stride, int32_t head_dim, const void* v,
                int64_t v_stride) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return num_tokens >= kEightPairsMinTokens && head_dim % 16 == 0 && qk_stride % 8 == 0 && aligned(qk) &&
         (v == nullptr || (v_stride % 8 == 0 && aligned(v)));
}

// RopeKernel<kStore, 1 or 8 pairs>.
template <KvStore kStore>
auto RopeKernelFor(bool eight) {
  return eight ? RopeKernel<kStore, 8> : RopeKernel<kStore, 1>;
}

}  // namespace

cudaError_t LaunchRope(bf16* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  const bool eight = EightPairs(num_tokens, x, x_stride, head_dim, nullptr, 0);
  const int blocks_per_token = BlocksPerToken(heads, head_dim, eight ? 8 : 1);
  return pdl::Launch(RopeKernelFor<KvStore::kNone>(eight), static_cast<unsigned>(num_tokens * blocks_per_token),
                     kThreads, 0, stream, x, x_stride, heads, head_dim, positions, inv_freq, blocks_per_token, nullptr,
                     0, nullptr, PagedKvView{});
}

cudaError_t LaunchRopeWriteKv(bf16* qk, int64_t qk_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                              const int32_t* positions, const float* inv_freq, const bf16* v, int64_t v_stride,
                              const int32_t* slot_mapping, const PagedKvView& cache, cudaStream_t stream) {
  if (cache.dtype != KvDType::kBF16 && cache.dtype != KvDType::kF16) return cudaErrorInvalidValue;
  if (cache.head_dim != head_dim || cache.kv_heads > heads || head_dim % 2 != 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  const bool eight = EightPairs(num_tokens, qk, qk_stride, head_dim, v, v_stride) &&
                     reinterpret_cast<uintptr_t>(cache.k) % 16 == 0 && reinterpret_cast<uintptr_t>(cache.v) % 16 == 0;
  const int blocks_per_token = BlocksPerToken(heads, head_dim, eight ? 8 : 1);
  const auto kernel =
      cache.dtype == KvDType::kF16 ? RopeKernelFor<KvStore::kF16>(eight) : RopeKernelFor<KvStore::kBf16>(eight);
  return pdl::Launch(kernel, static_cast<unsigned>(num_tokens * blocks_per_token), kThreads, 0, stream, qk, qk_stride,
                     heads, head_dim, positions, inv_freq, blocks_per_token, v, v_stride, slot_mapping, cache);
}

}  // namespace kvs::cuda
