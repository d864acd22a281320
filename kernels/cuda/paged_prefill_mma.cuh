// Prefill and chunked-prefill attention on tensor cores (flash-attention style), any KvDType:
// bf16 and fp16 tiles stream in with cp.async as stored, the quantized formats as raw codes
// decoded in shared memory into fp16 tiles (fp8/int8 K as bare codes, the key's scale applied to
// its scores); fp16 tiles run fp16 MMAs, which hold every code exactly with no trip through f32.
// Dispatched by LaunchAttentionFor (paged_attention_kernels.cuh).
#pragma once

#include "kernels/cuda/paged_attention_common.cuh"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace attention {

// ---------------------------------------------------------------------------------------------
// Prefill / chunked prefill on tensor cores (flash-attention style). A block owns 64 query rows
// of one (sequence, KV head) — row r is query token r / group, head r % group, so the GQA group
// shares every K/V tile — and each of its 4 warps 16 of them. K/V tiles of 32 keys stream through
// shared memory (two cp.async stages, shared by the warps); per warp S = Q K^T on mma.m16n8k16,
// causal mask by each row's position, online softmax on the accumulator rows (g, g + 8), and
// O += P V with P re-packed from S. Same split/partial contract as the other kernels.
template <KvDType F, int D>
__global__ void __launch_bounds__(kThreads) PagedPrefillMmaKernel(Params p) {
  pdl::StartAfterPrevious();
  constexpr int kKeys = 32;
  constexpr int kRow = D + 8;
  constexpr int kKSteps = D / 16;
  constexpr int kNTiles = D / 8;
  constexpr int kRowsPerBlock = 64;
  // bf16/fp16: two stages of bf16 tiles. Quantized formats: two raw stages, one decoded tile.
  constexpr bool kRawStaged = KvQuantized(F);  // fp16 and bf16 tiles stream in as stored
  constexpr int kTileStages = kRawStaged ? 1 : 2;
  constexpr int kRaw = RawRowBytes<F, D>();
  constexpr bool kFoldK = kFoldKeyScale<F>;
  constexpr bool kHalf = kRawStaged || F == KvDType::kF16;    // fp16 tiles and MMAs
  using Elem = std::conditional_t<kHalf, __half, bf16>;
  __shared__ __align__(16) Elem k_s[kTileStages][kKeys][kRow];
  __shared__ __align__(16) Elem v_s[kTileStages][kKeys][kRow];
  __shared__ __align__(16) unsigned char raw_s[kRawStaged ? 2 : 1][2][kRawStaged ? kKeys * kRaw : 16];

  const int seq = blockIdx.z, kvh = blockIdx.y;
  const int split = blockIdx.x / p.row_chunks, chunk = blockIdx.x % p.row_chunks;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int q_begin = p.query_start[seq];
  const int n_q = p.query_start[seq + 1] - q_begin;
  const int ctx = p.context_len[seq];
  const int first_pos = ctx - n_q;
  const int group = p.q_heads / p.kv_heads;
  const int total_rows = n_q * group;
  const int r0 = chunk * kRowsPerBlock;
  if (r0 >= total_rows) return;
  const int rows_here = min(kRowsPerBlock, total_rows - r0);
  const int k_lo = split * p.keys_per_split;
  const int block_last_pos = first_pos + (r0 + rows_here - 1) / group;
  const int k_hi = min(min(ctx, k_lo + p.keys_per_split), block_last_pos + 1);
  const int32_t* blocks = p.block_table + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // This thread's two rows (g and g + 8 of the warp's 16), their positions (-1: no such row).
  const int wr = r0 + warp * 16;
  const int row_lo = wr + g, row_hi = wr + g + 8;
  const int pos_lo = row_lo < r0 + rows_here ? first_pos + row_lo / group : -1;
  const int pos_hi = row_hi < r0 + rows_here ? first_pos + row_hi / group : -1;
  const int warp_last_pos = first_pos + (min(wr + 15, r0 + rows_here - 1)) / group;
  const bool warp_active = wr < r0 + rows_here;

  auto pack = [](float lo, float hi) {
    if constexpr (kHalf) {
      return PackHalf(lo, hi);
    } else {
      return PackBf16(lo, hi);
    }
  };
  auto mma = [](float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    if constexpr (kHalf) {
      MmaF16(c, a, b0, b1);
    } else {
      MmaBf16(c, a, b0, b1);
    }
  };
  uint32_t qa[kKSteps][4];
  {
    auto qv = [&](int row, int c) {
      if (row >= r0 + rows_here) return 0.0f;
      const int t = q_begin + row / group, h = kvh * group + row % group;
      return __bfloat162float(p.q[static_cast<int64_t>(t) * p.q_stride + h * D + c]);  // exact: no scale here
    };
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int c = ks * 16 + 2 * t4;
      qa[ks][0] = pack(qv(row_lo, c), qv(row_lo, c + 1));
      qa[ks][1] = pack(qv(row_hi, c), qv(row_hi, c + 1));
      qa[ks][2] = pack(qv(row_lo, c + 8), qv(row_lo, c + 9));
      qa[ks][3] = pack(qv(row_hi, c + 8), qv(row_hi, c + 9));
    }
  }
  float o[kNTiles][4];
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_lo = -FLT_MAX, m_hi = -FLT_MAX, l_lo = 0.0f, l_hi = 0.0f;

  auto load = [&](int stage, int base) {
    if constexpr (kRawStaged) {
      RawLoadTile<F, D, kKeys>(raw_s[stage][0], raw_s[stage][1], p, blocks, base, k_hi, kvh, tid, kThreads);
    } else {
      constexpr int kVec = D / 8;
      for (int i = tid; i < kKeys * kVec; i += kThreads) {
        const int key = i / kVec, vec = i % kVec;
        const int pos = base + key;
        const bool valid = pos < k_hi;
        const KvRow row = valid ? LocateKv(p, blocks, pos, kvh) : KvRow{};
        if constexpr (F == KvDType::kF16) {  // the stored bytes are the tile's
          CopyAsync16(&k_s[stage % kTileStages][key][vec * 8], p.k_cache + row.codes + vec * 16, valid);
          CopyAsync16(&v_s[stage % kTileStages][key][vec * 8], p.v_cache + row.codes + vec * 16, valid);
        } else {
          StageKv8<F>(&k_s[stage % kTileStages][key][vec * 8], p.k_cache, row, vec * 8, valid);
          StageKv8<F>(&v_s[stage % kTileStages][key][vec * 8], p.v_cache, row, vec * 8, valid);
        }
      }
    }
    CopyAsyncCommit();
  };
  if (k_lo < k_hi) load(0, k_lo);
  int stage = 0;
  for (int base = k_lo; base < k_hi; base += kKeys, stage ^= 1) {
    if (base + kKeys < k_hi) {
      load(stage ^ 1, base + kKeys);
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncthreads();
    if constexpr (kRawStaged) {
      DecodeRawTileHalf<F, D, kKeys, kRow, kFoldK>(raw_s[stage][0], &k_s[0][0][0], tid, kThreads);
      DecodeRawTileHalf<F, D, kKeys, kRow, false>(raw_s[stage][1], &v_s[0][0][0], tid, kThreads);
      __syncthreads();
    }
    const int ts = stage % kTileStages;  // the decoded tile
    if (warp_active && base <= warp_last_pos) {
      float sc[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          const Elem* krow = &k_s[ts][nt * 8 + g][ks * 16 + 2 * t4];
          mma(sc[nt], qa[ks], *reinterpret_cast<const uint32_t*>(krow), *reinterpret_cast<const uint32_t*>(krow + 8));
        }
      }
      if constexpr (kFoldK) {  // S = s_k (Q . codes_k): this lane's columns are keys nt * 8 + 2t + j
        constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const float sk = *reinterpret_cast<const float*>(&raw_s[stage][0][(nt * 8 + 2 * t4 + j) * kRaw + kRowBytes]);
            sc[nt][j] *= sk;
            sc[nt][2 + j] *= sk;
          }
        }
      }
      // The softmax scale in f32 (folded into bf16 Q it would round every query element).
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int j = 0; j < 4; ++j) sc[nt][j] *= p.scale_log2;
      }
      // Causal mask: row g sees keys up to its position pos_lo, row g + 8 up to pos_hi.
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = base + nt * 8 + 2 * t4 + j;
          if (key >= k_hi || key > pos_lo) sc[nt][j] = -FLT_MAX;
          if (key >= k_hi || key > pos_hi) sc[nt][2 + j] = -FLT_MAX;
        }
      }
      float c_lo, c_hi;
      FragmentSoftmax<4>(sc, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi);
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
        o[n][0] *= c_lo;
        o[n][1] *= c_lo;
        o[n][2] *= c_hi;
        o[n][3] *= c_hi;
      }
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {  // 32 keys = two k-steps of 16
        uint32_t pa[4];
        pa[0] = pack(sc[2 * kk][0], sc[2 * kk][1]);
        pa[1] = pack(sc[2 * kk][2], sc[2 * kk][3]);
        pa[2] = pack(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
        pa[3] = pack(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
        for (int n = 0; n < kNTiles; n += 2) {  // two n-tiles per ldmatrix
          uint32_t b[4];
          LdMatrixX4Trans(b, &v_s[ts][kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][n * 8 + (lane >> 4) * 8]);
          mma(o[n], pa, b[0], b[1]);
          mma(o[n + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage is consumed before the load two tiles on overwrites it
  }

  // Each thread writes its rows' (g, g + 8) pieces: columns 2t, 2t+1 of every n-tile.
  auto write_row = [&](int row, int pos, float m, float l, int half) {
    if (pos < 0) return;
    const int t = q_begin + row / group, h = kvh * group + row % group;
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
      const int d = n * 8 + 2 * t4;
      const float a0 = o[n][2 * half], a1 = o[n][2 * half + 1];
      if (p.num_splits == 1) {
        bf16* dst = p.out + static_cast<int64_t>(t) * p.out_stride + h * D + d;
        dst[0] = __float2bfloat16(a0 / l);
        dst[1] = __float2bfloat16(a1 / l);
      } else {
        const int64_t idx = (static_cast<int64_t>(split) * p.num_tokens + t) * p.q_heads + h;
        p.partial_out[idx * D + d] = a0;
        p.partial_out[idx * D + d + 1] = a1;
        if (n == 0 && t4 == 0) {
          p.partial_ml[idx * 2] = m;
          p.partial_ml[idx * 2 + 1] = l;
        }
      }
    }
  };
  write_row(row_lo, pos_lo, m_lo, l_lo, 0);
  write_row(row_hi, pos_hi, m_hi, l_hi, 1);
}

}  // namespace attention
}  // namespace kvs::cuda
