// Paged attention for what the tiled kernels do not take: sliding-window layers (Gemma 3's local
// layers: the query at position p sees keys p - window + 1 .. p) and head dims outside their
// compiled list (Gemma 3's 256, 96, ...), over bf16 caches (the fp16 instantiation is compiled but
// not offered: WindowAttentionSupports).
//
// One block of 8 warps per (query row, G query heads of one GQA group); each warp takes every 8th
// chunk of 32 keys: lane j scores key j of the chunk against the G queries (held in shared
// memory), reading the key once for all of them; the warp takes each head's chunk max and sum
// (online softmax), then every lane accumulates its D/32 output dims of every head over the
// chunk's value rows (8 in flight, each read once for the G heads), coalesced; the warps' states
// are merged in shared memory at the end. No tensor cores: a correctness-first path whose cost is measured in
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

// E = head_dim / 32: the output dims each lane owns (dims lane + 32 e). G: query heads of one GQA
// group per block, which share every key and value row the block loads.
template <typename T, int E, int G>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    WindowAttentionKernel(const bf16* q, int64_t q_stride, int32_t q_heads, PagedKvView cache, AttentionBatch batch,
                          float scale, bf16* out, int64_t out_stride) {
  constexpr int D = E * 32;
  __shared__ float q_smem[G][D];
  __shared__ float acc_smem[kWarpsPerBlock][G][D];
  __shared__ float max_smem[kWarpsPerBlock][G], sum_smem[kWarpsPerBlock][G];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int32_t blocks_per_row = q_heads / G;
  const int32_t t = static_cast<int32_t>(blockIdx.x / blocks_per_row);
  const int32_t h0 = static_cast<int32_t>(blockIdx.x % blocks_per_row) * G;  // heads h0 .. h0 + G - 1
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
  const int32_t kv_head = h0 / (q_heads / cache.kv_heads);
  const int32_t* blocks = batch.block_table + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
  const auto* kc = static_cast<const unsigned char*>(cache.k);
  const auto* vc = static_cast<const unsigned char*>(cache.v);

  const bf16* qr = q + static_cast<int64_t>(t) * q_stride + static_cast<int64_t>(h0) * D;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) q_smem[i / D][i % D] = __bfloat162float(qr[i]) * scale;
  __syncthreads();

  float acc[G][E];
  float running_max[G], running_sum[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    running_max[g] = -FLT_MAX;
    running_sum[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[g][e] = 0.0f;
  }
  for (int32_t base = first + 32 * warp; base <= pos; base += 32 * kWarpsPerBlock) {
    const int32_t key = base + lane;
    const bool valid = key <= pos;
    int64_t row = 0;
    float score[G];
#pragma unroll
    for (int g = 0; g < G; ++g) score[g] = -FLT_MAX;
    if (valid) {
      const int64_t slot = static_cast<int64_t>(blocks[key / cache.block_size]) * cache.block_size + key % cache.block_size;
      row = cache.RowOffset(slot, kv_head);
      // The key row in 16-byte pieces of 8 elements (rows are D * 2 bytes, D a multiple of 32),
      // each piece scored against every head of the block.
      const uint4* k = reinterpret_cast<const uint4*>(kc + row);
      float dot[G] = {};
#pragma unroll 4
      for (int piece = 0; piece < D / 8; ++piece) {
        const uint4 raw = k[piece];
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float kv = ToFloat(e[i]);
#pragma unroll
          for (int g = 0; g < G; ++g) dot[g] += q_smem[g][piece * 8 + i] * kv;
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) score[g] = dot[g];
    }
    float p[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float chunk_max = score[g];
      for (int o = 16; o > 0; o >>= 1) chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, o));
      const float new_max = fmaxf(running_max[g], chunk_max);
      p[g] = valid ? __expf(score[g] - new_max) : 0.0f;
      float chunk_sum = p[g];
      for (int o = 16; o > 0; o >>= 1) chunk_sum += __shfl_xor_sync(0xffffffffu, chunk_sum, o);
      const float correction = __expf(running_max[g] - new_max);
      running_sum[g] = running_sum[g] * correction + chunk_sum;
      running_max[g] = new_max;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[g][e] *= correction;
    }
    const int32_t keys = min(32, pos - base + 1);
    for (int j0 = 0; j0 < keys; j0 += kUnroll) {
      // kUnroll value rows loaded before any is used; rows past the chunk's keys are not read
      // (their slots may hold anything, NaN included).
      float vv[kUnroll][E];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u;
        const int64_t vrow = __shfl_sync(0xffffffffu, row, j);
        const T* v = reinterpret_cast<const T*>(vc + vrow);
#pragma unroll
        for (int e = 0; e < E; ++e) vv[u][e] = j < keys ? ToFloat(v[lane + 32 * e]) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float pj = __shfl_sync(0xffffffffu, p[g], j0 + u);
#pragma unroll
          for (int e = 0; e < E; ++e) acc[g][e] += pj * vv[u][e];
        }
      }
    }
  }
  // Merge the warps' states per head: out = sum_w acc_w e^(m_w - M) / sum_w l_w e^(m_w - M).
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int e = 0; e < E; ++e) acc_smem[warp][g][lane + 32 * e] = acc[g][e];
    if (lane == 0) {
      max_smem[warp][g] = running_max[g];
      sum_smem[warp][g] = running_sum[g];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    float m = -FLT_MAX;
#pragma unroll
    for (int w = 0; w < kWarpsPerBlock; ++w) m = fmaxf(m, max_smem[w][g]);
    float total = 0.0f, v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarpsPerBlock; ++w) {
      const float weight = sum_smem[w][g] > 0.0f ? __expf(max_smem[w][g] - m) : 0.0f;  // a warp with no keys adds nothing
      total += sum_smem[w][g] * weight;
      v += acc_smem[w][g][d] * weight;
    }
    out[static_cast<int64_t>(t) * out_stride + static_cast<int64_t>(h0 + g) * D + d] = __float2bfloat16(v / total);
  }
}

template <typename T, int E, int G>
cudaError_t Launch(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                   const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride, cudaStream_t stream) {
  const int64_t grid = static_cast<int64_t>(batch.num_tokens) * (q_heads / G);
  WindowAttentionKernel<T, E, G><<<grid, kWarpsPerBlock * 32, 0, stream>>>(q, q_stride, q_heads, cache, batch, scale,
                                                                           out, out_stride);
  return cudaGetLastError();
}

// Heads per block: the GQA group, up to what shared memory holds (G x D <= 1024 floats per warp),
// when there are rows enough to fill the GPU with grouped blocks (a prefill chunk); a step of few
// rows (decode) keeps one head per block, for parallelism over reuse (measured on an H200: Gemma 3
// 270M's decode step 1.55 ms one head per block, 1.75 grouped; its 16K prompt 449 ms, 171 grouped).
constexpr int64_t kMinGroupedBlocks = 1024;

template <typename T, int E>
cudaError_t LaunchGrouped(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                          const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                          cudaStream_t stream) {
  const int32_t group = q_heads / cache.kv_heads;
  if (static_cast<int64_t>(batch.num_tokens) * cache.kv_heads < kMinGroupedBlocks) {
    return Launch<T, E, 1>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
  }
  constexpr int kMaxG = 1024 / (E * 32);
  if (kMaxG >= 4 && group % 4 == 0) return Launch<T, E, (kMaxG >= 4 ? 4 : 1)>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
  if (kMaxG >= 2 && group % 2 == 0) return Launch<T, E, (kMaxG >= 2 ? 2 : 1)>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
  return Launch<T, E, 1>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
}

template <typename T>
cudaError_t LaunchFor(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                      const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride, cudaStream_t stream) {
  switch (cache.head_dim / 32) {
    case 1: return LaunchGrouped<T, 1>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 2: return LaunchGrouped<T, 2>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 3: return LaunchGrouped<T, 3>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 4: return LaunchGrouped<T, 4>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 5: return LaunchGrouped<T, 5>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 6: return LaunchGrouped<T, 6>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 7: return LaunchGrouped<T, 7>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
    case 8: return LaunchGrouped<T, 8>(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
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
