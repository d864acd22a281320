// Causal attention over the paged KV cache, for decode and (chunked) prefill alike.
//
// Work split: a block owns one (sequence, KV head, key range, chunk of ROWS query rows), where
// a query row is (query token, query head of this KV head's group) — so every K/V element a
// block loads serves all `group` query heads (GQA) and all its query tokens. Keys stream
// through shared memory in tiles of kTile with an online softmax (running max and sum, base-2
// exponent), so nothing of size context is stored. Long contexts with few sequences are split
// along the keys (flash-decoding): each split writes an unnormalised partial output with its max
// and sum, and a second kernel combines them.
//
// Layout (kernels/common/kv_format.h): per block, codes[offset][kv_head][row bytes] then the
// scales. Every kernel is a template on the cache's KvDType: bf16 tiles stream into shared memory
// with cp.async; the other formats stream in as raw codes and are decoded in registers (to bf16
// tiles, to f32 in the register kernel, or straight into MMA fragments for 8-bit caches in
// paged_decode_codes.cuh), so no full-precision copy of the cache ever exists.
//
// This header holds the kernels and their dispatch (LaunchAttentionFor<F>); the shared pieces are
// in paged_attention_common.cuh. One .cu file per format instantiates it, so the formats compile
// in parallel.
#pragma once

#include "kernels/cuda/attention_combine.cuh"
#include "kernels/cuda/paged_attention_common.cuh"
#include "kernels/cuda/paged_decode_codes.cuh"
#include "kernels/cuda/paged_prefill_mma.cuh"
#include "kernels/cuda/paged_prefill_wgmma.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/prefill_decoded_first.cuh"

namespace kvs::cuda {
namespace attention {

template <KvDType F, int D, int ROWS>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(Params p) {
  pdl::StartAfterPrevious();
  // K rows padded by 16 bytes: with the rotated read order below, the 32 lanes of a warp (32
  // keys) hit 32 different banks. Two stages: tile i+1 streams in while tile i is computed.
  constexpr int kRow = D + 8;
  constexpr int kOutPerThread = (ROWS * D + kThreads - 1) / kThreads;
  constexpr int kVecPerKey = D / 8;
  __shared__ __align__(16) float q_s[ROWS][D];
  __shared__ __align__(16) bf16 k_s[2][kTile][kRow];
  __shared__ __align__(16) bf16 v_s[2][kTile][D];
  __shared__ float p_s[ROWS][kTile + 1];
  __shared__ float m_s[ROWS], l_s[ROWS], c_s[ROWS];

  const int seq = blockIdx.z;
  const int kvh = blockIdx.y;
  const int split = blockIdx.x / p.row_chunks;
  const int chunk = blockIdx.x % p.row_chunks;
  const int tid = threadIdx.x;
  const int q_begin = p.query_start[seq];
  const int n_q = p.query_start[seq + 1] - q_begin;
  const int ctx = p.context_len[seq];
  const int first_pos = ctx - n_q;
  const int group = p.q_heads / p.kv_heads;
  const int total_rows = n_q * group;
  const int r0 = chunk * ROWS;
  if (r0 >= total_rows) return;  // this sequence has fewer query rows than the longest
  const int rows_here = min(ROWS, total_rows - r0);
  const int k_lo = split * p.keys_per_split;
  // Keys this chunk can see: up to the last row's position, within this split.
  const int last_pos = first_pos + (r0 + rows_here - 1) / group;
  const int k_hi = min(min(ctx, k_lo + p.keys_per_split), last_pos + 1);
  const int32_t* blocks = p.block_table + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  auto load_tile = [&](int stage, int kt) {
    for (int i = tid; i < kTile * kVecPerKey; i += kThreads) {
      const int key = i / kVecPerKey, vec = i % kVecPerKey;
      const int pos = kt + key;
      const bool valid = pos < k_hi;
      const KvRow row = valid ? LocateKv(p, blocks, pos, kvh) : KvRow{};
      StageKv8<F>(&k_s[stage][key][vec * 8], p.k_cache, row, vec * 8, valid);
      StageKv8<F>(&v_s[stage][key][vec * 8], p.v_cache, row, vec * 8, valid);
    }
    CopyAsyncCommit();
  };
  if (k_lo < k_hi) load_tile(0, k_lo);

  // Queries, pre-scaled so scores come out in the log2 domain.
  for (int i = tid; i < ROWS * D; i += kThreads) {
    const int r = i / D, d = i % D;
    float v = 0.0f;
    if (r < rows_here) {
      const int row = r0 + r;
      const int t = q_begin + row / group;
      const int h = kvh * group + row % group;
      v = __bfloat162float(p.q[static_cast<int64_t>(t) * p.q_stride + h * D + d]) * p.scale_log2;
    }
    q_s[r][d] = v;
  }
  if (tid < ROWS) {
    m_s[tid] = -FLT_MAX;
    l_s[tid] = 0.0f;
  }
  float acc[kOutPerThread];
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) acc[j] = 0.0f;

  int stage = 0;
  for (int kt = k_lo; kt < k_hi; kt += kTile, stage ^= 1) {
    if (kt + kTile < k_hi) {
      load_tile(stage ^ 1, kt + kTile);
      CopyAsyncWait<1>();  // this tile has landed; the next may still be in flight
    } else {
      CopyAsyncWait<0>();
    }
    __syncthreads();
    // Scores for (row, key), masked causally and past the split.
    for (int i = tid; i < ROWS * kTile; i += kThreads) {
      const int r = i / kTile, key = i % kTile;
      const int pos = kt + key;
      const int row_pos = first_pos + (r0 + r) / group;
      float s = -FLT_MAX;
      if (r < rows_here && pos < k_hi && pos <= row_pos) {
        s = 0.0f;
#pragma unroll 8
        for (int j = 0; j < D / 2; ++j) {
          const int w = (j + key) & (D / 2 - 1);  // rotated start: conflict-free across keys
          const float2 kf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&k_s[stage][key][2 * w]));
          s += q_s[r][2 * w] * kf.x + q_s[r][2 * w + 1] * kf.y;
        }
      }
      p_s[r][key] = s;
    }
    __syncthreads();
    // Online softmax: one warp per row at a time, one lane per key.
    const int warp = tid / 32, lane = tid % 32;
    for (int r = warp; r < ROWS; r += kThreads / 32) {
      const float s = p_s[r][lane];
      float tile_max = s;
      for (int o = 16; o > 0; o >>= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
      const float m_old = m_s[r];
      const float m_new = fmaxf(m_old, tile_max);
      const float prob = s == -FLT_MAX ? 0.0f : exp2f(s - m_new);
      float sum = prob;
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      p_s[r][lane] = prob;
      if (lane == 0) {
        const float corr = m_old == -FLT_MAX ? 0.0f : exp2f(m_old - m_new);
        c_s[r] = corr;
        l_s[r] = l_s[r] * corr + sum;
        m_s[r] = m_new;
      }
    }
    __syncthreads();
    // acc[row, d] = acc * correction + sum_key p[row, key] * v[key, d].
#pragma unroll
    for (int j = 0; j < kOutPerThread; ++j) {
      const int i = tid + j * kThreads;
      if (i < ROWS * D) {
        const int r = i / D, d = i % D;
        float a = acc[j] * c_s[r];
#pragma unroll 8
        for (int key = 0; key < kTile; ++key) a += p_s[r][key] * __bfloat162float(v_s[stage][key][d]);
        acc[j] = a;
      }
    }
    __syncthreads();  // the stage is free for the load two tiles on
  }

  // Write the result (normalised) or this split's partial.
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    const int i = tid + j * kThreads;
    if (i >= ROWS * D) continue;
    const int r = i / D, d = i % D;
    if (r >= rows_here) continue;
    const int row = r0 + r;
    const int t = q_begin + row / group;
    const int h = kvh * group + row % group;
    if (p.num_splits == 1) {
      p.out[static_cast<int64_t>(t) * p.out_stride + h * D + d] = __float2bfloat16(acc[j] / l_s[r]);
    } else {
      const int64_t idx = (static_cast<int64_t>(split) * p.num_tokens + t) * p.q_heads + h;
      p.partial_out[idx * D + d] = acc[j];
      if (d == 0) {
        p.partial_ml[idx * 2] = m_s[r];
        p.partial_ml[idx * 2 + 1] = l_s[r];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decode-only kernel (every sequence has exactly one query): the GQA group's queries and the
// accumulators stay in registers. A warp works on kKeysPerWarp keys at once, kLanesPerKey lanes
// per key, each lane holding a 16-wide slice of the head dimension; dot products reduce with
// shuffles inside the lane group, and each lane group keeps its own online softmax, so the key
// loop has no block-wide barrier. Lane groups and then warps merge their (max, sum, acc) at the end.
__device__ inline void Merge(float& m, float& l, float* acc, float om, float ol, const float* oacc, int n) {
  const float mm = fmaxf(m, om);
  if (mm == -FLT_MAX) return;  // both empty
  const float a = m == -FLT_MAX ? 0.0f : exp2f(m - mm);
  const float b = om == -FLT_MAX ? 0.0f : exp2f(om - mm);
  l = l * a + ol * b;
  for (int i = 0; i < n; ++i) acc[i] = acc[i] * a + oacc[i] * b;
  m = mm;
}

template <KvDType F, int D, int G>
__global__ void __launch_bounds__(kThreads) PagedDecodeKernel(Params p) {
  pdl::StartAfterPrevious();
  constexpr int kLanesPerKey = D / 16;
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  constexpr int kWarps = kThreads / 32;
  __shared__ float merge_ml[kWarps][G][2];
  __shared__ float merge_acc[kWarps][G][D];

  const int seq = blockIdx.z, kvh = blockIdx.y, split = blockIdx.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int sub = lane / kLanesPerKey, part = lane % kLanesPerKey;
  const int t = p.query_start[seq];
  const int ctx = p.context_len[seq];
  const int group = p.q_heads / p.kv_heads;
  const int k_lo = split * p.keys_per_split;
  const int k_hi = min(ctx, k_lo + p.keys_per_split);
  const int32_t* blocks = p.block_table + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  float q[G][16];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (g < group) {
      const bf16* qp = p.q + static_cast<int64_t>(t) * p.q_stride + (kvh * group + g) * D + part * 16;
      const uint4 a = *reinterpret_cast<const uint4*>(qp), b = *reinterpret_cast<const uint4*>(qp + 8);
      const __nv_bfloat162* ha = reinterpret_cast<const __nv_bfloat162*>(&a);
      const __nv_bfloat162* hb = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 fa = __bfloat1622float2(ha[e]), fb = __bfloat1622float2(hb[e]);
        q[g][2 * e] = fa.x * p.scale_log2;
        q[g][2 * e + 1] = fa.y * p.scale_log2;
        q[g][8 + 2 * e] = fb.x * p.scale_log2;
        q[g][8 + 2 * e + 1] = fb.y * p.scale_log2;
      }
    } else {
#pragma unroll
      for (int e = 0; e < 16; ++e) q[g][e] = 0.0f;
    }
  }
  float m[G], l[G], acc[G][16];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[g][e] = 0.0f;
  }

#pragma unroll 2
  for (int base = k_lo + warp * kKeysPerWarp; base < k_hi; base += kWarps * kKeysPerWarp) {
    const int pos = base + sub;
    const bool valid = pos < k_hi;
    float kf[16], vf[16];
    float k_scale = 1.0f, v_scale = 1.0f;  // fp8/int8: codes are loaded unscaled
    if (valid) {
      const KvRow row = LocateKv(p, blocks, pos, kvh);
      Load16f<F>(p.k_cache, row, part * 16, kf, &k_scale);
      Load16f<F>(p.v_cache, row, part * 16, vf, &v_scale);
    } else {
#pragma unroll
      for (int e = 0; e < 16; ++e) kf[e] = vf[e] = 0.0f;
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < 16; ++e) s += q[g][e] * kf[e];
#pragma unroll
      for (int o = kLanesPerKey / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      s *= k_scale;  // the key's scale, folded (1 for unscaled formats)
      if (valid) {
        const float mn = fmaxf(m[g], s);
        const float c = m[g] == -FLT_MAX ? 0.0f : exp2f(m[g] - mn);
        const float pe = exp2f(s - mn);
        l[g] = l[g] * c + pe;
        const float pv = pe * v_scale;  // the value's scale, folded
#pragma unroll
        for (int e = 0; e < 16; ++e) acc[g][e] = acc[g][e] * c + pv * vf[e];
        m[g] = mn;
      }
    }
  }

  // Merge the lane groups of a warp (same `part`, different keys), then the warps.
#pragma unroll
  for (int o = kLanesPerKey; o < 32; o <<= 1) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const float om = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float ol = __shfl_xor_sync(0xffffffffu, l[g], o);
      float oacc[16];
#pragma unroll
      for (int e = 0; e < 16; ++e) oacc[e] = __shfl_xor_sync(0xffffffffu, acc[g][e], o);
      Merge(m[g], l[g], acc[g], om, ol, oacc, 16);
    }
  }
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      if (part == 0) {
        merge_ml[warp][g][0] = m[g];
        merge_ml[warp][g][1] = l[g];
      }
#pragma unroll
      for (int e = 0; e < 16; ++e) merge_acc[warp][g][part * 16 + e] = acc[g][e];
    }
  }
  __syncthreads();
  // Threads of warp 0..: one (head g, dim d) output each.
  for (int i = tid; i < group * D; i += kThreads) {
    const int g = i / D, d = i % D;
    float mm = -FLT_MAX, ll = 0.0f, aa = 0.0f;
    for (int w = 0; w < kWarps; ++w) Merge(mm, ll, &aa, merge_ml[w][g][0], merge_ml[w][g][1], &merge_acc[w][g][d], 1);
    const int h = kvh * group + g;
    if (p.num_splits == 1) {
      p.out[static_cast<int64_t>(t) * p.out_stride + h * D + d] = __float2bfloat16(aa / ll);
    } else {
      const int64_t idx = (static_cast<int64_t>(split) * p.num_tokens + t) * p.q_heads + h;
      p.partial_out[idx * D + d] = aa;
      if (d == 0) {
        p.partial_ml[idx * 2] = mm;
        p.partial_ml[idx * 2 + 1] = ll;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decode-only kernel on tensor cores for bf16 caches (the other formats take
// PagedDecodeCodesKernel, paged_decode_codes.cuh), for GQA groups of 3..16 query heads per KV head. With one
// query per sequence the group's heads are the M dimension of mma.m16n8k16 (padded to 16 rows):
// S = Q K^T over a 16-key tile, online softmax on the accumulator fragments, O += P V with P
// re-packed from S's registers. Each warp owns its own keys (a 16-key tile in its own shared
// region, loaded with cp.async); warps merge at the end. Fragment layouts (PTX ISA, m16n8k16):
//   A 16x16 row: a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..)
//   B 16x8 col:  b0 (k 2t..2t+1, n g) b1 (k 2t+8.., n g)
//   C 16x8:      c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1)      g = lane/4, t = lane%4
template <KvDType F, int D>
__global__ void __launch_bounds__(kThreads) PagedDecodeMmaKernel(Params p) {
  pdl::StartAfterPrevious();
  constexpr int kKeys = 16;        // keys per warp tile
  constexpr int kRow = D + 8;      // padded rows: conflict-free fragment reads
  constexpr int kWarps = kThreads / 32;
  constexpr int kKSteps = D / 16;  // k-steps of S = Q K^T
  constexpr int kNTiles = D / 8;   // n-tiles of O = P V
  constexpr int kTileElems = kKeys * kRow;
  // Dynamic shared memory: [warp][stage][K|V][key][kRow] bf16 — two stages per warp, so the next
  // tile streams in while this one is on the tensor cores.
  constexpr int kTileStages = 2;
  static_assert(F == KvDType::kBF16, "other formats build MMA fragments from the codes (PagedDecodeCodesKernel)");
  auto pack = [](float lo, float hi) { return PackBf16(lo, hi); };
  auto mma = [](float* c, const uint32_t* a, uint32_t b0, uint32_t b1) { MmaBf16(c, a, b0, b1); };
  extern __shared__ __align__(16) unsigned char decode_smem[];
  bf16* const smem = reinterpret_cast<bf16*>(decode_smem);
  __shared__ float merge_ml[kWarps][16][2];

  const int seq = blockIdx.z, kvh = blockIdx.y, split = blockIdx.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int tok = p.query_start[seq];
  const int ctx = p.context_len[seq];
  const int group = p.q_heads / p.kv_heads;
  const int k_lo = split * p.keys_per_split;
  const int k_hi = min(ctx, k_lo + p.keys_per_split);
  const int32_t* blocks = p.block_table + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // Q fragments (rows = heads of the group, zero beyond it), pre-scaled for exp2.
  uint32_t qa[kKSteps][4];
  {
    const bf16* q0 = p.q + static_cast<int64_t>(tok) * p.q_stride + static_cast<int64_t>(kvh) * group * D;
    auto qv = [&](int r, int c) { return r < group ? __bfloat162float(q0[r * D + c]) * p.scale_log2 : 0.0f; };
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int c = ks * 16 + 2 * t4;
      qa[ks][0] = pack(qv(g, c), qv(g, c + 1));
      qa[ks][1] = pack(qv(g + 8, c), qv(g + 8, c + 1));
      qa[ks][2] = pack(qv(g, c + 8), qv(g, c + 9));
      qa[ks][3] = pack(qv(g + 8, c + 8), qv(g + 8, c + 9));
    }
  }
  float o[kNTiles][4];
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_lo = -FLT_MAX, m_hi = -FLT_MAX, l_lo = 0.0f, l_hi = 0.0f;  // rows g and g + 8

  // Load a 16-key tile of K and V (D/8 16-byte pieces per key) into this warp's `stage`. Lane k
  // (and k + 16) locates key k once (inside one cache block, the tile's block is read once and the
  // rows are 32-bit offsets from it); the lanes that copy its pieces take the row by shuffle. A
  // block-table read and a division per piece made the 32 x 4K shape 9% slower (H200).
  auto load = [&](int stage, int base) {
    bf16* kt = smem + (warp * kTileStages + stage % kTileStages) * 2 * kTileElems;
    bf16* vt = kt + kTileElems;
    constexpr int kVec = D / 8;
    const int my_key = lane % kKeys;
    const TileRows tile = LocateTile<kKeys>(p, blocks, base, k_hi);
    const int64_t mine = base + my_key < k_hi ? LocateInTile(p, blocks, tile, base, my_key, kvh).codes : 0;
    for (int i = lane; i < kKeys * kVec; i += 32) {
      const int key = i / kVec, vec = i % kVec;
      const bool valid = base + key < k_hi;
      const KvRow row{__shfl_sync(0xffffffffu, mine, key), 0};
      StageKv8<F>(kt + key * kRow + vec * 8, p.k_cache, row, vec * 8, valid);
      StageKv8<F>(vt + key * kRow + vec * 8, p.v_cache, row, vec * 8, valid);
    }
    CopyAsyncCommit();
  };
  constexpr int kStride = kWarps * kKeys;
  if (k_lo + warp * kKeys < k_hi) load(0, k_lo + warp * kKeys);
  int stage = 0;
  for (int base = k_lo + warp * kKeys; base < k_hi; base += kStride, stage ^= 1) {
    if (base + kStride < k_hi) {
      load(stage ^ 1, base + kStride);
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncwarp();
    bf16* const k_tile = smem + (warp * kTileStages + stage % kTileStages) * 2 * kTileElems;
    bf16* const v_tile = k_tile + kTileElems;
    // S = Q K^T: two n-tiles of 8 keys.
    float sc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const bf16* krow = k_tile + (nt * 8 + g) * kRow + ks * 16 + 2 * t4;
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + 8);
        mma(sc[nt], qa[ks], b0, b1);
      }
    }
    // Mask keys past the range, then the online softmax per row (a row lives in one quad).
    float c_lo, c_hi;
    DecodeTileSoftmax(sc, base, k_hi, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi);
    // O = O * c + P V: P (16 rows x 16 keys) from the S fragments, V^T pieces from shared memory.
    uint32_t pa[4];
    pa[0] = pack(sc[0][0], sc[0][1]);
    pa[1] = pack(sc[0][2], sc[0][3]);
    pa[2] = pack(sc[1][0], sc[1][1]);
    pa[3] = pack(sc[1][2], sc[1][3]);
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
      o[n][0] *= c_lo;
      o[n][1] *= c_lo;
      o[n][2] *= c_hi;
      o[n][3] *= c_hi;
    }
#pragma unroll
    for (int n = 0; n < kNTiles; n += 2) {  // two n-tiles per ldmatrix
      uint32_t b[4];
      LdMatrixX4Trans(b, v_tile + ((lane & 7) + ((lane >> 3) & 1) * 8) * kRow + n * 8 + (lane >> 4) * 8);
      mma(o[n], pa, b[0], b[1]);
      mma(o[n + 1], pa, b[2], b[3]);
    }
    __syncwarp();  // this stage is consumed before the load two tiles on overwrites it
  }

  static_assert(kWarps * kTileStages * 2 * kTileElems * sizeof(bf16) >= 16 * D * sizeof(float), "merge scratch");
  MergeDecodeWarps<D, kNTiles>(p, o, m_lo, l_lo, m_hi, l_hi, reinterpret_cast<float*>(decode_smem), merge_ml, tok, kvh,
                               split, [](int n, int col) { return n * 8 + col; });
}

// ---------------------------------------------------------------------------------------------
// Launch: plan the key splits for the kernel's occupancy, run it, combine the splits
// (attention_combine.cuh).
template <int D, typename Kernel>
cudaError_t LaunchPlanned(Kernel kernel, size_t smem, int64_t resident, Params p, dim3 grid, cudaStream_t stream) {
  PlanSplits(p, grid, resident, D);
  // Every kernel passed here waits for the previous one first (pdl.cuh).
  return CombineSplits<D>(pdl::Launch(kernel, grid, kThreads, smem, stream, p), p, stream);
}

// Prefill on Hopper's warpgroup MMAs (paged_prefill_wgmma.cu), every cache format.
template <int D>
cudaError_t LaunchPrefillWgmma(Params p, KvDType dtype, int max_query_len, int num_seqs, cudaStream_t stream) {
  const int rows = WgmmaPrefillRows();
  p.row_chunks = (max_query_len * (p.q_heads / p.kv_heads) + rows - 1) / rows;
  dim3 grid(p.row_chunks, p.kv_heads, num_seqs);
  PlanSplits(p, grid, WgmmaPrefillResidentBlocks(dtype, D, p.num_sms), D);
  return CombineSplits<D>(LaunchWgmmaPrefill(p, dtype, D, grid, stream), p, stream);
}

// The same over an fp8/int8/int4 cache decoded first into the workspace's scratch
// (prefill_decoded_first.cuh; DecodeFirst said it fits).
template <KvDType F, int D>
cudaError_t LaunchPrefillDecodedFirst(Params p, int max_query_len, int num_seqs, cudaStream_t stream) {
  const DecodedFirstLayout l = DecodedFirstLayoutFor(p.block_size, p.kv_heads, D, p.max_context_len);
  const DecodedFirstLayout::Pages pages = l.Carve(p.kv_scratch, num_seqs);
  const dim3 grid(l.blocks_per_seq, num_seqs);
  const cudaError_t err = pdl::Launch(DecodeKvToScratchKernel<F, D>, grid, 256, 0, stream, p, l, pages);
  if (err != cudaSuccess) return err;
  p.k_cache = pages.k;
  p.v_cache = pages.v;
  p.block_bytes = l.block_bytes;
  p.num_blocks = static_cast<int64_t>(num_seqs) * l.blocks_per_seq;
  p.row_bytes = static_cast<int32_t>(KvRowBytes(KvDType::kF16, D));
  p.scale_bytes = 0;
  p.block_table = pages.table;
  p.max_blocks_per_seq = l.blocks_per_seq;
  return LaunchPrefillWgmma<D>(p, KvDType::kF16, max_query_len, num_seqs, stream);
}

template <KvDType F, int D, int G>
cudaError_t LaunchDecode(Params p, dim3 grid, cudaStream_t stream) {
  static const int64_t resident = ResidentBlocks(PagedDecodeKernel<F, D, G>, 0, p.num_sms);
  return LaunchPlanned<D>(PagedDecodeKernel<F, D, G>, 0, resident, p, grid, stream);
}

template <KvDType F, int D>
cudaError_t LaunchPrefillMma(Params p, dim3 grid, cudaStream_t stream) {
  static const int64_t resident = ResidentBlocks(PagedPrefillMmaKernel<F, D>, 0, p.num_sms);
  return LaunchPlanned<D>(PagedPrefillMmaKernel<F, D>, 0, resident, p, grid, stream);
}

template <KvDType F, int D>
cudaError_t DispatchDecode(int group, Params p, dim3 grid, cudaStream_t stream) {
  if (group == 1) return LaunchDecode<F, D, 1>(p, grid, stream);
  if (group == 2) return LaunchDecode<F, D, 2>(p, grid, stream);
  return LaunchDecode<F, D, 4>(p, grid, stream);  // 3 and 4
}

// Dynamic shared memory of PagedDecodeMmaKernel<F, D>: warps x 2 stages x K,V bf16 tiles.
template <int D>
constexpr size_t DecodeMmaSmemBytes() {
  return static_cast<size_t>(kThreads / 32) * 2 * 2 * 16 * (D + 8) * sizeof(bf16);
}

// Decode on tensor cores: fp16 and quantized caches build their fp16 fragments from the stored
// codes (paged_decode_codes.cuh), bf16 stages bf16 tiles (PagedDecodeMmaKernel).
template <KvDType F, int D>
cudaError_t LaunchDecodeMma(Params p, dim3 grid, cudaStream_t stream) {
  if constexpr (F != KvDType::kBF16) {
    constexpr size_t kSmem = DecodeCodesSmemBytes<F, D>();
    static const cudaError_t attr = cudaFuncSetAttribute(
        PagedDecodeCodesKernel<F, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
    if (attr != cudaSuccess) return attr;
    static const int64_t resident = ResidentBlocks(PagedDecodeCodesKernel<F, D>, kSmem, p.num_sms);
    return LaunchPlanned<D>(PagedDecodeCodesKernel<F, D>, kSmem, resident, p, grid, stream);
  } else {
    constexpr size_t kSmem = DecodeMmaSmemBytes<D>();
    static const cudaError_t attr = cudaFuncSetAttribute(
        PagedDecodeMmaKernel<F, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
    if (attr != cudaSuccess) return attr;
    static const int64_t resident = ResidentBlocks(PagedDecodeMmaKernel<F, D>, kSmem, p.num_sms);
    return LaunchPlanned<D>(PagedDecodeMmaKernel<F, D>, kSmem, resident, p, grid, stream);
  }
}

template <KvDType F, int D, int ROWS>
cudaError_t Launch(Params p, dim3 grid, cudaStream_t stream) {
  static const int64_t resident = ResidentBlocks(PagedAttentionKernel<F, D, ROWS>, 0, p.num_sms);
  return LaunchPlanned<D>(PagedAttentionKernel<F, D, ROWS>, 0, resident, p, grid, stream);
}

template <KvDType F, int D>
cudaError_t DispatchRows(int rows, Params p, dim3 grid, cudaStream_t stream) {
  switch (rows) {
    case 1: return Launch<F, D, 1>(p, grid, stream);
    case 2: return Launch<F, D, 2>(p, grid, stream);
    case 4: return Launch<F, D, 4>(p, grid, stream);
    case 8: return Launch<F, D, 8>(p, grid, stream);
    case 16: return Launch<F, D, 16>(p, grid, stream);
    default: return cudaErrorInvalidValue;
  }
}

// The kernel for this step's shape and cache format. `p` is filled but for row_chunks and the
// splits. bf16 caches have every head dim of kAttentionHeadDims; the other formats 64 and 128
// (the real models'), with fewer instantiations to compile.
template <KvDType F>
cudaError_t LaunchAttentionFor(Params p, int head_dim, int num_seqs, int max_query_len, cudaStream_t stream) {
  const int group = p.q_heads / p.kv_heads;
  // Rows per block of the generic kernel: the whole GQA group of one decode token, else 16.
  int rows = 16;
  if (max_query_len == 1) {
    rows = 1;
    while (rows < group && rows < 16) rows *= 2;
  }
  constexpr bool kAllDims = F == KvDType::kBF16;
  if (!kAllDims) {
    if (head_dim != 64 && head_dim != 128) return cudaErrorInvalidValue;
    rows = 16;  // the generic kernel is compiled with 16 rows only for these formats
  }
  p.row_chunks = (max_query_len * group + rows - 1) / rows;
  const dim3 grid(p.row_chunks, p.kv_heads, num_seqs);
  // Tensor cores pay for bf16 from a GQA group of 3; the other formats build their fragments
  // from the codes (no per-element conversion to f32), which pays even for one head (MHA).
  const int min_mma_group = kAllDims ? 3 : 1;
  if (max_query_len == 1 && group >= min_mma_group && group <= 16 && (head_dim == 64 || head_dim == 128)) {
    // Decode-only step on tensor cores.
    p.row_chunks = 1;
    const dim3 g1(1, p.kv_heads, num_seqs);
    return head_dim == 64 ? LaunchDecodeMma<F, 64>(p, g1, stream) : LaunchDecodeMma<F, 128>(p, g1, stream);
  }
  if (max_query_len == 1 && group <= 4 && head_dim >= 16) {
    // Decode-only step, small group: the register kernel (one row chunk per sequence).
    p.row_chunks = 1;
    const dim3 g1(1, p.kv_heads, num_seqs);
    if constexpr (kAllDims) {
      if (head_dim == 16) return DispatchDecode<F, 16>(group, p, g1, stream);
      if (head_dim == 32) return DispatchDecode<F, 32>(group, p, g1, stream);
    }
    if (head_dim == 64) return DispatchDecode<F, 64>(group, p, g1, stream);
    if (head_dim == 128) return DispatchDecode<F, 128>(group, p, g1, stream);
    return cudaErrorInvalidValue;
  }
  if (WgmmaPrefillSupports(F, head_dim) && UseHopperPrefill()) {
    if constexpr (F == KvDType::kFP8 || F == KvDType::kINT8 || F == KvDType::kINT4) {
      bool decode_first = false;
      if (const cudaError_t err = DecodeFirst(p, num_seqs, head_dim, &decode_first); err != cudaSuccess) return err;
      if (decode_first) {
        return head_dim == 64 ? LaunchPrefillDecodedFirst<F, 64>(p, max_query_len, num_seqs, stream)
                              : LaunchPrefillDecodedFirst<F, 128>(p, max_query_len, num_seqs, stream);
      }
    }
    return head_dim == 64 ? LaunchPrefillWgmma<64>(p, F, max_query_len, num_seqs, stream)
                          : LaunchPrefillWgmma<128>(p, F, max_query_len, num_seqs, stream);
  }
  if (head_dim == 64 || head_dim == 128) {
    // Prefill, chunked prefill and mixed steps: tensor cores, 64 query rows per block.
    p.row_chunks = (max_query_len * group + 63) / 64;
    const dim3 prefill_grid(p.row_chunks, p.kv_heads, num_seqs);
    return head_dim == 64 ? LaunchPrefillMma<F, 64>(p, prefill_grid, stream)
                          : LaunchPrefillMma<F, 128>(p, prefill_grid, stream);
  }
  if constexpr (kAllDims) {
    if (head_dim == 16) return DispatchRows<F, 16>(rows, p, grid, stream);
    if (head_dim == 32) return DispatchRows<F, 32>(rows, p, grid, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attention
}  // namespace kvs::cuda
