// Paged attention for what the tiled kernels do not take: sliding-window layers (Gemma 3's local
// layers: the query at position p sees keys p - window + 1 .. p) and head dims outside their
// compiled list (Gemma 3's 256, 96, ...), over bf16 or fp16 caches.
//
// One block of 8 warps per (query row, query head); each warp takes every 8th chunk of 32 keys:
// lane j scores key j of the chunk against the whole query (held in shared memory), the warp
// takes the chunk's max and sum (online softmax), then every lane accumulates its D/32 output
// dims over the chunk's value rows (8 in flight), reading them coalesced; the warps' states are
// merged in shared memory at the end. No tensor cores: a correctness-first path whose cost is measured in
// docs/performance.md; a windowed layer reads at most `window` keys per query, so its cost is
// bounded by the window, not the context.
#include <cfloat>

#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

// Warps of one block share a (query row, query head): they take turns over the key chunks and
// merge their softmax states at the end, so a decode step (one query row) still spreads its keys
// over 8 warps.
constexpr int kWarpsPerBlock = 8;
constexpr int kUnroll = 8;  // value rows in flight per lane while accumulating

template <typename T>
__device__ inline float ToFloat(T v);
template <>
__device__ inline float ToFloat<bf16>(bf16 v) { return __bfloat162float(v); }
template <>
__device__ inline float ToFloat<__half>(__half v) { return __half2float(v); }

// E = head_dim / 32: the output dims each lane owns (dims lane + 32 e).
template <typename T, int E>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    WindowAttentionKernel(const bf16* q, int64_t q_stride, int32_t q_heads, PagedKvView cache, AttentionBatch batch,
                          float scale, bf16* out, int64_t out_stride) {
  constexpr int D = E * 32;
  __shared__ float q_smem[D];
  __shared__ float acc_smem[kWarpsPerBlock][D];
  __shared__ float max_smem[kWarpsPerBlock], sum_smem[kWarpsPerBlock];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int32_t t = static_cast<int32_t>(blockIdx.x / q_heads), h = static_cast<int32_t>(blockIdx.x % q_heads);
  // The sequence owning row t: the last s with query_start[s] <= t.
  int32_t lo_s = 0, hi_s = batch.num_seqs - 1;
  while (lo_s < hi_s) {
    const int32_t mid = (lo_s + hi_s + 1) / 2;
    if (batch.query_start[mid] <= t) lo_s = mid;
    else hi_s = mid - 1;
  }
  const int32_t s = lo_s;
  const int32_t queries = batch.query_start[s + 1] - batch.query_start[s];
  const int32_t pos = batch.context_len[s] - queries + (t - batch.query_start[s]);
  const int32_t first = cache.window > 0 ? max(0, pos - cache.window + 1) : 0;
  const int32_t kv_head = h / (q_heads / cache.kv_heads);
  const int32_t* blocks = batch.block_table + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
  const auto* kc = static_cast<const unsigned char*>(cache.k);
  const auto* vc = static_cast<const unsigned char*>(cache.v);

  const bf16* qr = q + static_cast<int64_t>(t) * q_stride + static_cast<int64_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) q_smem[d] = __bfloat162float(qr[d]) * scale;
  __syncthreads();

  float acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  float running_max = -FLT_MAX, running_sum = 0.0f;
  for (int32_t base = first + 32 * warp; base <= pos; base += 32 * kWarpsPerBlock) {
    const int32_t key = base + lane;
    const bool valid = key <= pos;
    int64_t row = 0;
    float score = -FLT_MAX;
    if (valid) {
      const int64_t slot = static_cast<int64_t>(blocks[key / cache.block_size]) * cache.block_size + key % cache.block_size;
      row = cache.RowOffset(slot, kv_head);
      // The key row in 16-byte pieces of 8 elements (rows are D * 2 bytes, D a multiple of 32).
      const uint4* k = reinterpret_cast<const uint4*>(kc + row);
      float dot = 0.0f;
#pragma unroll 4
      for (int piece = 0; piece < D / 8; ++piece) {
        const uint4 raw = k[piece];
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < 8; ++i) dot += q_smem[piece * 8 + i] * ToFloat(e[i]);
      }
      score = dot;
    }
    float chunk_max = score;
    for (int o = 16; o > 0; o >>= 1) chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, o));
    const float new_max = fmaxf(running_max, chunk_max);
    const float p = valid ? __expf(score - new_max) : 0.0f;
    float chunk_sum = p;
    for (int o = 16; o > 0; o >>= 1) chunk_sum += __shfl_xor_sync(0xffffffffu, chunk_sum, o);
    const float correction = __expf(running_max - new_max);
    running_sum = running_sum * correction + chunk_sum;
    running_max = new_max;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] *= correction;
    const int32_t keys = min(32, pos - base + 1);
    for (int j0 = 0; j0 < keys; j0 += kUnroll) {
      // kUnroll value rows loaded before any is used; rows past the chunk's keys are not read
      // (their slots may hold anything, NaN included).
      float pj[kUnroll], vv[kUnroll][E];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u;
        pj[u] = __shfl_sync(0xffffffffu, p, j);
        const int64_t vrow = __shfl_sync(0xffffffffu, row, j);
        const T* v = reinterpret_cast<const T*>(vc + vrow);
#pragma unroll
        for (int e = 0; e < E; ++e) vv[u][e] = j < keys ? ToFloat(v[lane + 32 * e]) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] += pj[u] * vv[u][e];
      }
    }
  }
  // Merge the warps' states: out = sum_w acc_w 2^(m_w - M) / sum_w l_w 2^(m_w - M).
#pragma unroll
  for (int e = 0; e < E; ++e) acc_smem[warp][lane + 32 * e] = acc[e];
  if (lane == 0) {
    max_smem[warp] = running_max;
    sum_smem[warp] = running_sum;
  }
  __syncthreads();
  float m = -FLT_MAX;
#pragma unroll
  for (int w = 0; w < kWarpsPerBlock; ++w) m = fmaxf(m, max_smem[w]);
  float total = 0.0f;
  float weight[kWarpsPerBlock];
#pragma unroll
  for (int w = 0; w < kWarpsPerBlock; ++w) {
    weight[w] = sum_smem[w] > 0.0f ? __expf(max_smem[w] - m) : 0.0f;  // a warp with no keys adds nothing
    total += sum_smem[w] * weight[w];
  }
  bf16* o = out + static_cast<int64_t>(t) * out_stride + static_cast<int64_t>(h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarpsPerBlock; ++w) v += acc_smem[w][d] * weight[w];
    o[d] = __float2bfloat16(v / total);
  }
}

template <typename T, int E>
cudaError_t Launch(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                   const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride, cudaStream_t stream) {
  const int64_t grid = static_cast<int64_t>(batch.num_tokens) * q_heads;
  WindowAttentionKernel<T, E><<<grid, kWarpsPerBlock * 32, 0, stream>>>(q, q_stride, q_heads, cache, batch, scale,
                                                                        out, out_stride);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchFor(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                      const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride, cudaStream_t stream) {
  switch (cache.head_dim / 32) {
    case 1: return Launch<T, 1>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 2: return Launch<T, 2>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 3: return Launch<T, 3>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 4: return Launch<T, 4>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 5: return Launch<T, 5>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 6: return Launch<T, 6>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 7: return Launch<T, 7>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 8: return Launch<T, 8>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t LaunchWindowAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                  const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                  cudaStream_t stream) {
  if (batch.num_tokens == 0) return cudaSuccess;
  if (!WindowAttentionSupports(cache.dtype, cache.head_dim)) return cudaErrorInvalidValue;
  return cache.dtype == KvDType::kBF16
             ? LaunchFor<bf16>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream)
             : LaunchFor<__half>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
}

}  // namespace kvs::cuda
