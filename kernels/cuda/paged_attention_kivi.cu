// Paged attention over the channel-quantized caches (int4 / int2, kernels/common/kv_format.h):
// keys quantized per channel over a block, values per token in groups of 32, each sequence's
// newest tokens in bf16 in its residual ring (paged_kv.h: positions from max(sealed[s],
// ring.SealedEnd(context)) on, and its first block where the ring's sink holds it). The CPU
// reference is kernels/cpu/kv_codec.cc's KvRowReader.
//
// Work: a block of kWarps warps per (query row, G query heads of one GQA group, key split). Each
// warp takes chunks of up to 32 consecutive keys (lane = key), which touch at most kMaxFold cache
// blocks. Per-channel key scales fold into the query, once per block and chunk (KIVI): with
// k_d = c_d s_d + z_d, q . k = sum_d (q_d s_d) c_d + sum_d q_d z_d, so a key's score is a dot of
// the folded query with its raw codes plus the block's bias — no per-element scale loads. Every
// load of a chunk is issued at its start (each lane its key's codes and value row), the value rows
// staged in shared memory; lane l then owns dims [l E, l E + E) of the output, which lie in one
// 32-wide value group, so one (scale, zero) pair per key and lane. Codes become floats by integer
// instructions (UnitFloat), not conversions. Softmax in base 2 with a
// running max and sum per warp; warps merge in shared memory, key splits through the workspace
// (attention_combine.cuh). CUDA cores: prefill steps, and decode steps in shapes the tensor-core
// decode kernel (paged_decode_kivi.cu, KiviDecodeMmaSupports) does not take.
#include <cfloat>

#include "kernels/cuda/attention_combine.cuh"
#include "kernels/cuda/kernel_choice.h"

namespace kvs::cuda {
namespace {

constexpr int kWarps = 4;
// A chunk holds min(32, 2 * block_size + 1) keys, so it spans at most three blocks.
constexpr int kMaxFold = 3;
constexpr int kPad = 4;  // floats after each folded query row: chunks' blocks land in other banks
constexpr unsigned kFull = 0xffffffffu;

struct KiviParams {
  const bf16* q;
  int64_t q_stride;
  int32_t q_heads;
  PagedKvView cache;
  AttentionBatch batch;
  float scale_log2;  // softmax scale * log2(e): scores in base 2
  int32_t keys_per_split;
  int32_t num_splits;
  bf16* out;
  int64_t out_stride;
  float* partial_out;
  float* partial_ml;
};

template <int kBits, int E, int G>
struct alignas(16) Smem {
  static constexpr int D = 32 * E;
  static constexpr int kCodeWords = D * kBits / 32;                           // one row's codes, 32-bit words (>= 2)
  static constexpr int kCodeStride = kCodeWords + (kCodeWords >= 4 ? 4 : 2);  // padded: fewer bank conflicts
  float q[G][D];
  union {
    struct {
      float fold[kWarps][kMaxFold][G][D + kPad];  // 2^bits * q_d * s_d per block of the chunk
      float bias[kWarps][kMaxFold][G];
      // Each lane's key: its value row's codes and (scale, zero) pairs, and its probabilities.
      uint32_t v_codes[kWarps][32][kCodeStride];
      float2 v_scales[kWarps][32][E];  // per value group: (2^bits s, z - 2^bits s), see UnitFloat
      float p[kWarps][32][G];
    } loop;
    struct {
      float acc[kWarps][G][D];
      float ml[kWarps][G][2];
    } merge;
  };
};

template <int kBits, int E, int G>
constexpr bool Fits() {
  return sizeof(Smem<kBits, E, G>) <= 48 * 1024;
}

// 1 + code_i / 2^kBits as a float, code i of `word` (kBits each, low first) put under the exponent
// of 1.0: two integer instructions and exact, where a conversion would take the slow I2F unit.
template <int kBits>
__device__ inline float UnitFloat(uint32_t word, int i) {
  constexpr uint32_t kMask = ((1u << kBits) - 1) << (23 - kBits);
  const int shift = 23 - kBits - i * kBits;
  const uint32_t moved = shift >= 0 ? word << shift : word >> -shift;
  return __uint_as_float((moved & kMask) | 0x3f800000u);
}

__device__ inline float2 ScaleZeroOf(uint32_t pair) {  // fp16 (scale, zero), scale in the low half
  return __half22float2(*reinterpret_cast<const __half2*>(&pair));
}

template <int kBits, int E, int G>
__global__ void __launch_bounds__(kWarps * 32) KiviAttentionKernel(KiviParams p) {
  constexpr int D = 32 * E;
  using S = Smem<kBits, E, G>;
  constexpr int kCodeWords = S::kCodeWords;
  constexpr int kCodesPerWord = 32 / kBits;
  constexpr float kLevels = 1 << kBits;  // code c = 2^bits (UnitFloat - 1)
  __shared__ S sm;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const PagedKvView& c = p.cache;
  const AttentionBatch& b = p.batch;
  const int32_t groups_per_row = p.q_heads / G;
  const int32_t t = static_cast<int32_t>(blockIdx.x / groups_per_row);
  const int32_t h0 = static_cast<int32_t>(blockIdx.x % groups_per_row) * G;
  const int32_t split = static_cast<int32_t>(blockIdx.y);
  int32_t lo_s = 0, hi_s = b.num_seqs - 1;  // the sequence of row t: the last with query_start <= t
  while (lo_s < hi_s) {
    const int32_t mid = (lo_s + hi_s + 1) / 2;
    if (b.query_start[mid] <= t)
      lo_s = mid;
    else
      hi_s = mid - 1;
  }
  const int32_t s = lo_s;
  const int32_t pos = b.context_len[s] - (b.query_start[s + 1] - b.query_start[s]) + (t - b.query_start[s]);
  const int32_t first = c.window > 0 ? max(0, pos - c.window + 1) : 0;
  const int32_t lo = max(first, split * p.keys_per_split), hi = min(pos + 1, (split + 1) * p.keys_per_split);
  const int32_t kvh = h0 / (p.q_heads / c.kv_heads);
  const int32_t* blocks = b.block_table + static_cast<int64_t>(s) * b.max_blocks_per_seq;
  const KvResidualRing ring = c.ring();
  const int32_t sealed_end = max(b.sealed != nullptr ? b.sealed[s] : 0, ring.SealedEnd(b.context_len[s]));
  const int32_t residual = b.residual != nullptr ? b.residual[s] : -1;
  const bool holds_sink = b.sink != nullptr && b.sink[s] != 0;
  const int32_t bs = c.block_size, chunk = min(32, 2 * bs + 1);
  const auto* kc = static_cast<const unsigned char*>(c.k);
  const auto* vc = static_cast<const unsigned char*>(c.v);
  const auto* k_res = static_cast<const bf16*>(c.k_residual);
  const auto* v_res = static_cast<const bf16*>(c.v_residual);
  const int64_t width = static_cast<int64_t>(c.kv_heads) * D;

  const bf16* qr = p.q + static_cast<int64_t>(t) * p.q_stride + static_cast<int64_t>(h0) * D;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) sm.q[i / D][i % D] = __bfloat162float(qr[i]) * p.scale_log2;
  __syncthreads();

  float m[G], l[G], acc[G][E];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[g][e] = 0.0f;
  }
  for (int32_t base = lo + chunk * warp; base < hi; base += chunk * kWarps) {
    const int32_t keys = min(chunk, hi - base);
    const int32_t b_first = base / bs, nb = (base + keys - 1) / bs - b_first + 1;
    const int32_t key = base + lane;
    const bool in_ring = ring.Reads(key, sealed_end, holds_sink);
    const bool valid = lane < keys && (!in_ring || residual >= 0);
    const bool sealed_key = valid && !in_ring;
    // The chunk's row loads are issued here, before any is used: the lane's block id, then its
    // key's codes and its value row's codes and scales (the fold below loads the key scales).
    const int32_t block = sealed_key ? blocks[key / bs] : 0;
    const int64_t slot = static_cast<int64_t>(block) * bs + key % bs;
    uint32_t k_words[kCodeWords], v_words[kCodeWords], v_pairs[E] = {};
    if (sealed_key) {
      const unsigned char* krow = kc + c.RowOffset(slot, kvh);
      const unsigned char* vrow = vc + c.RowOffset(slot, kvh);
      if constexpr (kCodeWords % 4 == 0) {
#pragma unroll
        for (int w = 0; w < kCodeWords / 4; ++w) {
          *reinterpret_cast<uint4*>(&k_words[4 * w]) = reinterpret_cast<const uint4*>(krow)[w];
          *reinterpret_cast<uint4*>(&v_words[4 * w]) = reinterpret_cast<const uint4*>(vrow)[w];
        }
      } else {
#pragma unroll
        for (int w = 0; w < kCodeWords / 2; ++w) {
          *reinterpret_cast<uint2*>(&k_words[2 * w]) = reinterpret_cast<const uint2*>(krow)[w];
          *reinterpret_cast<uint2*>(&v_words[2 * w]) = reinterpret_cast<const uint2*>(vrow)[w];
        }
      }
      const auto* vs = reinterpret_cast<const uint32_t*>(vc + c.ScaleOffset(slot, kvh));
#pragma unroll
      for (int e = 0; e < E; ++e) v_pairs[e] = vs[e];
    }
    __syncwarp();  // the previous chunk's shared rows are read
    // Fold each sealed block's channel scales into the queries (its block id from the lane whose
    // key opens the block in this chunk): fold = 2^bits q s, bias = q . z - sum fold, so that a
    // key's score is fold . UnitFloat(codes) + bias.
    for (int fb = 0; fb < nb && (b_first + fb) * bs < sealed_end; ++fb) {
      if (holds_sink && ring.InSink((b_first + fb) * bs)) continue;  // read from the sink: no sealed key
      const int32_t id = __shfl_sync(kFull, block, max(0, (b_first + fb) * bs - base));
      const auto* sz = reinterpret_cast<const uint32_t*>(kc + c.ChannelScaleOffset(id, kvh));
      float bias[G] = {};
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int d = e * 32 + lane;
        const float2 f = ScaleZeroOf(sz[d]);
        const float s2 = f.x * kLevels;
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const float folded = sm.q[g][d] * s2;
          sm.loop.fold[warp][fb][g][d] = folded;
          bias[g] += sm.q[g][d] * f.y - folded;
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        for (int o = 16; o > 0; o >>= 1) bias[g] += __shfl_xor_sync(kFull, bias[g], o);
        if (lane == 0) sm.loop.bias[warp][fb][g] = bias[g];
      }
    }
    if (sealed_key) {
#pragma unroll
      for (int w = 0; w < kCodeWords; ++w) sm.loop.v_codes[warp][lane][w] = v_words[w];
#pragma unroll
      for (int e = 0; e < E; ++e) {  // v = c s + z = (2^bits s) UnitFloat + (z - 2^bits s)
        const float2 f = ScaleZeroOf(v_pairs[e]);
        sm.loop.v_scales[warp][lane][e] = make_float2(f.x * kLevels, f.y - f.x * kLevels);
      }
    }
    __syncwarp();

    // Scores: lane = key.
    float score[G];
#pragma unroll
    for (int g = 0; g < G; ++g) score[g] = -FLT_MAX;
    if (sealed_key) {
      const int fb = key / bs - b_first;
      float dot[G] = {};
#pragma unroll
      for (int w = 0; w < kCodeWords; ++w) {
#pragma unroll
        for (int i = 0; i < kCodesPerWord; i += 4) {
          const int d = w * kCodesPerWord + i;
          const float x0 = UnitFloat<kBits>(k_words[w], i), x1 = UnitFloat<kBits>(k_words[w], i + 1);
          const float x2 = UnitFloat<kBits>(k_words[w], i + 2), x3 = UnitFloat<kBits>(k_words[w], i + 3);
#pragma unroll
          for (int g = 0; g < G; ++g) {
            const float4 f = *reinterpret_cast<const float4*>(&sm.loop.fold[warp][fb][g][d]);
            dot[g] = fmaf(f.w, x3, fmaf(f.z, x2, fmaf(f.y, x1, fmaf(f.x, x0, dot[g]))));
          }
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) score[g] = dot[g] + sm.loop.bias[warp][fb][g];
    } else if (valid) {  // in the ring: a bf16 row
      const int64_t r = ring.Slot(residual, key);
      const uint4* row = reinterpret_cast<const uint4*>(k_res + r * width + static_cast<int64_t>(kvh) * D);
      float dot[G] = {};
#pragma unroll 4
      for (int piece = 0; piece < D / 8; ++piece) {
        const uint4 raw = row[piece];
        const auto* e = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float2 kf = __bfloat1622float2(e[u]);
#pragma unroll
          for (int g = 0; g < G; ++g)
            dot[g] += sm.q[g][piece * 8 + 2 * u] * kf.x + sm.q[g][piece * 8 + 2 * u + 1] * kf.y;
        }
      }
#pragma unroll
      for (int g = 0; g < G; ++g) score[g] = dot[g];
    }

#pragma unroll
    for (int g = 0; g < G; ++g) {
      float cmax = score[g];
      for (int o = 16; o > 0; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(kFull, cmax, o));
      const float new_max = fmaxf(m[g], cmax);
      const float pr = valid ? exp2f(score[g] - new_max) : 0.0f;
      sm.loop.p[warp][lane][g] = pr;
      float csum = pr;
      for (int o = 16; o > 0; o >>= 1) csum += __shfl_xor_sync(kFull, csum, o);
      const float correction = exp2f(m[g] - new_max);
      l[g] = l[g] * correction + csum;
      m[g] = new_max;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[g][e] *= correction;
    }
    // Which keys are in the ring (bit j: key j), for the value loop.
    const uint32_t ring_keys = __ballot_sync(kFull, valid && in_ring);
    __syncwarp();

    // Values: lane owns dims [lane E, lane E + E) of each key's row, in one 32-wide group.
    const int group = lane * E / 32;
    const int word = lane * E * kBits / 32, bit = (lane * E * kBits) % 32;
    for (int j0 = 0; j0 < keys; j0 += 4) {
#pragma unroll
      for (int j = j0; j < j0 + 4; ++j) {
        if (j >= keys) break;
        float vv[E];
        if ((ring_keys >> j) & 1u) {
          const bf16* row = v_res + ring.Slot(residual, base + j) * width + static_cast<int64_t>(kvh) * D + lane * E;
#pragma unroll
          for (int e = 0; e < E; ++e) vv[e] = __bfloat162float(row[e]);
        } else {
          const float2 f = sm.loop.v_scales[warp][j][group];
          const uint32_t codes = sm.loop.v_codes[warp][j][word] >> bit;
#pragma unroll
          for (int e = 0; e < E; ++e) vv[e] = fmaf(UnitFloat<kBits>(codes, e), f.x, f.y);
        }
        float pj[G];
        if constexpr (G % 4 == 0) {
#pragma unroll
          for (int g = 0; g < G; g += 4) {
            *reinterpret_cast<float4*>(&pj[g]) = *reinterpret_cast<const float4*>(&sm.loop.p[warp][j][g]);
          }
        } else {
#pragma unroll
          for (int g = 0; g < G; ++g) pj[g] = sm.loop.p[warp][j][g];
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
#pragma unroll
          for (int e = 0; e < E; ++e) acc[g][e] = fmaf(pj[g], vv[e], acc[g][e]);
        }
      }
    }
  }

  // Merge the warps: out = sum_w acc_w 2^(m_w - M) / sum_w l_w 2^(m_w - M).
  __syncthreads();  // the loop's shared memory is the merge's
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int e = 0; e < E; ++e) sm.merge.acc[warp][g][lane * E + e] = acc[g][e];
    if (lane == 0) {
      sm.merge.ml[warp][g][0] = m[g];
      sm.merge.ml[warp][g][1] = l[g];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    float mx = -FLT_MAX;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm.merge.ml[w][g][0]);
    float total = 0.0f, v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float weight = sm.merge.ml[w][g][1] > 0.0f ? exp2f(sm.merge.ml[w][g][0] - mx) : 0.0f;  // no keys: nothing
      total += sm.merge.ml[w][g][1] * weight;
      v += sm.merge.acc[w][g][d] * weight;
    }
    const int32_t h = h0 + g;
    if (p.num_splits == 1) {
      p.out[static_cast<int64_t>(t) * p.out_stride + static_cast<int64_t>(h) * D + d] =
          __float2bfloat16(total > 0.0f ? v / total : 0.0f);
    } else {
      const int64_t idx = (static_cast<int64_t>(split) * b.num_tokens + t) * p.q_heads + h;
      if (total > 0.0f) p.partial_out[idx * D + d] = v;  // an empty split's weight is 0 in the combine
      if (d == 0) {
        p.partial_ml[idx * 2] = mx;
        p.partial_ml[idx * 2 + 1] = total;
      }
    }
  }
}

// Key splits: enough blocks for two waves of resident blocks when the rows alone are fewer,
// splits of at least kMinKeysPerSplit keys, as many as the workspace holds.
constexpr int32_t kMinKeysPerSplit = 256;

template <int kBits, int E, int G>
cudaError_t Launch(KiviParams p, const AttentionWorkspace& ws, cudaStream_t stream) {
  constexpr int D = 32 * E;
  static_assert(Fits<kBits, E, G>(), "static shared memory");
  const AttentionBatch& b = p.batch;
  const int64_t rows = static_cast<int64_t>(b.num_tokens) * (p.q_heads / G);
  static const int64_t resident =
      attention::ResidentBlocks(KiviAttentionKernel<kBits, E, G>, 0, ws.num_sms, kWarps * 32);
  int64_t splits = (2 * resident + rows - 1) / rows;
  splits = std::min<int64_t>(splits, std::max(1, b.max_context_len / kMinKeysPerSplit));
  const int64_t per_split = static_cast<int64_t>(b.num_tokens) * p.q_heads * D;
  if (ws.partial_out == nullptr || ws.partial_ml == nullptr) splits = 1;
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, ws.capacity_floats / per_split));
  const int32_t chunk_keys = 32 * kWarps;
  p.keys_per_split =
      static_cast<int32_t>((b.max_context_len + splits - 1) / splits + chunk_keys - 1) / chunk_keys * chunk_keys;
  p.num_splits = (b.max_context_len + p.keys_per_split - 1) / p.keys_per_split;
  p.partial_out = ws.partial_out;
  p.partial_ml = ws.partial_ml;
  KiviAttentionKernel<kBits, E, G><<<dim3(static_cast<unsigned>(rows), p.num_splits), kWarps * 32, 0, stream>>>(p);
  attention::Params cp{};
  cp.out = p.out;
  cp.out_stride = p.out_stride;
  cp.q_heads = p.q_heads;
  cp.num_tokens = b.num_tokens;
  cp.num_splits = p.num_splits;
  cp.partial_out = p.partial_out;
  cp.partial_ml = p.partial_ml;
  return attention::CombineSplits<D>(cudaGetLastError(), cp, stream);
}

// G: query heads per block, the most of the GQA group (up to 8) that divides it and whose folded
// queries and staged rows fit in static shared memory.
template <int kBits, int E>
cudaError_t LaunchGrouped(const KiviParams& p, const AttentionWorkspace& ws, cudaStream_t stream) {
  const int32_t group = p.q_heads / p.cache.kv_heads;
  if constexpr (Fits<kBits, E, 8>()) {
    if (group % 8 == 0) return Launch<kBits, E, 8>(p, ws, stream);
  }
  if constexpr (Fits<kBits, E, 4>()) {
    if (group % 4 == 0) return Launch<kBits, E, 4>(p, ws, stream);
  }
  if constexpr (Fits<kBits, E, 2>()) {
    if (group % 2 == 0) return Launch<kBits, E, 2>(p, ws, stream);
  }
  return Launch<kBits, E, 1>(p, ws, stream);
}

template <int kBits>
cudaError_t LaunchFor(const KiviParams& p, const AttentionWorkspace& ws, cudaStream_t stream) {
  switch (p.cache.head_dim) {
    case 32: return LaunchGrouped<kBits, 1>(p, ws, stream);
    case 64: return LaunchGrouped<kBits, 2>(p, ws, stream);
    case 128: return LaunchGrouped<kBits, 4>(p, ws, stream);
    case 256: return LaunchGrouped<kBits, 8>(p, ws, stream);
    default: return cudaErrorInvalidValue;
  }
}

KernelChoice g_decode_kernel("KVS_KIVI_DECODE", "cuda-cores");  // alternative: this file's kernel

bool UseDecodeMma() { return !g_decode_kernel.Alternative(); }

}  // namespace

void SetKiviDecodeKernel(KiviDecodeKernel kernel) { g_decode_kernel.Set(kernel == KiviDecodeKernel::kCudaCores); }

cudaError_t LaunchKiviAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                const AttentionWorkspace& ws, cudaStream_t stream) {
  if (batch.num_tokens == 0) return cudaSuccess;
  if (!KiviAttentionSupports(cache.dtype, cache.head_dim) || cache.k_residual == nullptr ||
      q_heads % cache.kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  if (batch.max_query_len == 1 && UseDecodeMma() &&
      KiviDecodeMmaSupports(cache.dtype, cache.head_dim, cache.block_size, q_heads / cache.kv_heads)) {
    return LaunchKiviDecodeMma(q, q_stride, q_heads, cache, batch, scale, out, out_stride, ws, stream);
  }
  bool decoded_first = false;
  const cudaError_t err = LaunchKiviPrefillDecodedFirst(q, q_stride, q_heads, cache, batch, scale, out, out_stride, ws,
                                                        stream, &decoded_first);
  if (decoded_first || err != cudaSuccess) return err;
  KiviParams p{};
  p.q = q;
  p.q_stride = q_stride;
  p.q_heads = q_heads;
  p.cache = cache;
  p.batch = batch;
  p.scale_log2 = scale * attention::kLog2e;
  p.out = out;
  p.out_stride = out_stride;
  return cache.dtype == KvDType::kKivi4 ? LaunchFor<4>(p, ws, stream) : LaunchFor<2>(p, ws, stream);
}

}  // namespace kvs::cuda
