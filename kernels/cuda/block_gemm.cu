// Weights kept in GGML blocks, multiplied by batches of 9 to kBlockGemmMaxTokens tokens on int8
// tensor cores straight from the blocks (llama.cpp's MMQ idea, written for kvshard's unit reader).
//
// Why: beyond the GEMV's 8 tokens the blocks used to be decoded into bf16 tiles that cuBLAS then
// multiplied: 2 bytes a weight written and read again on top of the block bytes, so a Q4_K batch
// of 32 took 0.47x bf16's step (docs/performance.md). Here a block of threads owns 64 weight rows
// x BM tokens; per chunk of kChunkUnits units (32 weights each) it decodes the rows' units into
// int8 codes and per-16 scales and mins in shared memory (ggml_unit.cuh's ReadUnit, the GEMV's
// reader), stages the tokens' int8 activations (rounded per 32 as the GEMV rounds them:
// LaunchQuantizeActivations), and each warp runs mma.sync m16n8k32 (or two m16n8k16 for the types
// whose scales are per 16) on 16 rows x BM tokens, scaling each unit's int32 sums by the weight
// scale and the activation scale in f32, plus min x (scale x sum of the codes) per 16 for the types
// with an offset. The arithmetic is the GEMV's (exact int32 dots, one rounding of the activations),
// so its error bound is the GEMV's.
//
// A matrix whose row tiles alone would not fill the GPU (a 4,096-row matrix is 64 blocks of 64 rows
// on 132 SMs) is split along k (blockIdx.z): each split's f32 sums go to a scratch and a second
// kernel adds them in split order, so a run's sums do not depend on timing. Splitting made it
// 1.2-1.7x faster than the bf16 tiles per layer at 32 tokens on an H200 (it was 2-3.3x slower),
// still slower at 128: the default takes it to kBlockGemmAutoMaxTokens (cuda_kernels.h,
// docs/performance.md).
//
// Fragment layouts (PTX ISA, mma.m16n8k32 / m16n8k16 with .s8, g = lane / 4, t = lane % 4):
//   A (16 x 32): a0 (row g, k 4t..4t+3) a1 (g + 8, 4t..) a2 (g, 16 + 4t..) a3 (g + 8, 16 + 4t..)
//   B (32 x 8):  b0 (k 4t..4t+3, col g) b1 (k 16 + 4t.., col g)       (k16: a0, a1 and b0 only)
//   C (16 x 8):  c0 (g, 2t) c1 (g, 2t + 1) c2 (g + 8, 2t) c3 (g + 8, 2t + 1), int32
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/ggml_unit.cuh"
#include "kernels/cuda/kernel_choice.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kRows = 64;       // weight rows per block: 16 per warp
constexpr int kChunkUnits = 4;  // units (32 weights each) per shared-memory chunk
constexpr int kChunkBytes = kChunkUnits * 32;
constexpr int kPad = 16;  // bytes after each staged row: fragment reads spread over the banks

__device__ __forceinline__ void MmaS8K32(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void MmaS8K16(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a0), "r"(a1), "r"(b0));
}

template <int BM>
struct Staged {
  alignas(16) int8_t wq[kRows][kChunkBytes + kPad];  // weight codes
  float ws[kRows][2 * kChunkUnits];                  // weight scale per 16
  float wm[kRows][2 * kChunkUnits];                  // weight min per 16 (0 without an offset)
  alignas(16) int8_t xq[BM][kChunkBytes + kPad];     // activation codes
  float xd[BM][kChunkUnits];                         // activation scale per 32
  float xs[BM][2 * kChunkUnits];                     // activation scale x sum of codes, per 16
};

// One chunk's MMAs: this lane's rows r_lo / r_hi (16 a warp) x BM tokens, added to acc.
template <GgmlType T, int BM>
__device__ __forceinline__ void MultiplyChunk(const Staged<BM>& sm, float (&acc)[BM / 8][4], int r_lo, int r_hi, int g,
                                              int t4) {
  using Tr = ggml::Traits<T>;
  // Q2_K, Q3_K and Q6_K scale every 16 weights on their own: two k16 MMAs a unit, each scaled.
  constexpr bool kPer16 = T == GgmlType::kQ2_K || T == GgmlType::kQ3_K || T == GgmlType::kQ6_K;
  constexpr int kNT = BM / 8;  // n-tiles of 8 tokens
#pragma unroll
  for (int uu = 0; uu < kChunkUnits; ++uu) {
    // This lane's A fragments: rows r_lo / r_hi, k 4t.. and 16 + 4t.. of the unit.
    uint32_t af[4];
    af[0] = *reinterpret_cast<const uint32_t*>(&sm.wq[r_lo][uu * 32 + 4 * t4]);
    af[1] = *reinterpret_cast<const uint32_t*>(&sm.wq[r_hi][uu * 32 + 4 * t4]);
    af[2] = *reinterpret_cast<const uint32_t*>(&sm.wq[r_lo][uu * 32 + 16 + 4 * t4]);
    af[3] = *reinterpret_cast<const uint32_t*>(&sm.wq[r_hi][uu * 32 + 16 + 4 * t4]);
    const float s_lo0 = sm.ws[r_lo][2 * uu], s_lo1 = sm.ws[r_lo][2 * uu + 1];
    const float s_hi0 = sm.ws[r_hi][2 * uu], s_hi1 = sm.ws[r_hi][2 * uu + 1];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int tk = nt * 8 + g;  // B's column: this lane loads token tk's codes
      const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&sm.xq[tk][uu * 32 + 4 * t4]);
      const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&sm.xq[tk][uu * 32 + 16 + 4 * t4]);
      // C's columns: tokens nt * 8 + 2t and + 1.
      const int ta = nt * 8 + 2 * t4, tb = ta + 1;
      const float da = sm.xd[ta][uu], db = sm.xd[tb][uu];
      if constexpr (kPer16) {
        int c[4] = {0, 0, 0, 0}, e[4] = {0, 0, 0, 0};
        MmaS8K16(c, af[0], af[1], b0);
        MmaS8K16(e, af[2], af[3], b1);
        acc[nt][0] += da * (s_lo0 * static_cast<float>(c[0]) + s_lo1 * static_cast<float>(e[0]));
        acc[nt][1] += db * (s_lo0 * static_cast<float>(c[1]) + s_lo1 * static_cast<float>(e[1]));
        acc[nt][2] += da * (s_hi0 * static_cast<float>(c[2]) + s_hi1 * static_cast<float>(e[2]));
        acc[nt][3] += db * (s_hi0 * static_cast<float>(c[3]) + s_hi1 * static_cast<float>(e[3]));
      } else {  // one scale for the unit's 32 weights
        int c[4] = {0, 0, 0, 0};
        MmaS8K32(c, af, b0, b1);
        acc[nt][0] += da * s_lo0 * static_cast<float>(c[0]);
        acc[nt][1] += db * s_lo0 * static_cast<float>(c[1]);
        acc[nt][2] += da * s_hi0 * static_cast<float>(c[2]);
        acc[nt][3] += db * s_hi0 * static_cast<float>(c[3]);
      }
      if constexpr (Tr::kHasMin) {  // sum_e min x_e = min (d sum q), per 16
        const float m_lo0 = sm.wm[r_lo][2 * uu], m_lo1 = sm.wm[r_lo][2 * uu + 1];
        const float m_hi0 = sm.wm[r_hi][2 * uu], m_hi1 = sm.wm[r_hi][2 * uu + 1];
        const float xa0 = sm.xs[ta][2 * uu], xa1 = sm.xs[ta][2 * uu + 1];
        const float xb0 = sm.xs[tb][2 * uu], xb1 = sm.xs[tb][2 * uu + 1];
        acc[nt][0] += m_lo0 * xa0 + m_lo1 * xa1;
        acc[nt][1] += m_lo0 * xb0 + m_lo1 * xb1;
        acc[nt][2] += m_hi0 * xa0 + m_hi1 * xa1;
        acc[nt][3] += m_hi0 * xb0 + m_hi1 * xb1;
      }
    }
  }
}

// The block's sums: to partials[z] when split, else to out (bf16 or f32).
template <int BM>
__device__ __forceinline__ void StoreOutputs(const float (&acc)[BM / 8][4], int row0, int tok0, int r_lo, int r_hi,
                                             int t4, int n, int tokens, void* out, int64_t out_stride, bool f32_out,
                                             float* __restrict__ partials) {
  constexpr int kNT = BM / 8;
  // out[token][row]: this lane's rows r_lo / r_hi, tokens nt * 8 + 2t (+ 1).
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + (e < 2 ? r_lo : r_hi), tok = tok0 + nt * 8 + 2 * t4 + (e & 1);
      if (row >= n || tok >= tokens) continue;
      if (partials != nullptr) {
        partials[(static_cast<int64_t>(blockIdx.z) * tokens + tok) * n + row] = acc[nt][e];
      } else if (f32_out) {
        static_cast<float*>(out)[static_cast<int64_t>(tok) * out_stride + row] = acc[nt][e];
      } else {
        static_cast<__nv_bfloat16*>(out)[static_cast<int64_t>(tok) * out_stride + row] =
            __float2bfloat16_rn(acc[nt][e]);
      }
    }
  }
}

// out[t, row] = x[t] . w[row] for t < tokens (<= kBlockGemmMaxTokens), row < n; split along k
// (blockIdx.z of gridDim.z, `split_units` units each, a multiple of kChunkUnits) into
// partials[z][t][row] when there are several splits (SumSplits adds them), else straight to out.
template <GgmlType T, int BM>
__global__ void __launch_bounds__(kThreads)
    BlockGemmKernel(const uint8_t* __restrict__ w, int64_t row_bytes, int n, int units, int split_units,
                    QuantizedActivations a, int tokens, void* out, int64_t out_stride, bool f32_out,
                    float* __restrict__ partials) {
  using Tr = ggml::Traits<T>;
  constexpr int kNT = BM / 8;  // n-tiles of 8 tokens
  __shared__ Staged<BM> sm;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int row0 = blockIdx.x * kRows, tok0 = blockIdx.y * BM;
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;  // this lane's rows in the block

  float acc[kNT][4];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;

  const int u_begin = blockIdx.z * split_units, u_end = min(units, u_begin + split_units);
  for (int c0 = u_begin; c0 < u_end; c0 += kChunkUnits) {
    __syncthreads();  // the previous chunk is consumed
    // Weights: a thread per (row, unit), consecutive threads on consecutive units of a row.
    for (int i = tid; i < kRows * kChunkUnits; i += kThreads) {
      const int r = i / kChunkUnits, uu = i % kChunkUnits, row = row0 + r, u = c0 + uu;
      uint4* dst = reinterpret_cast<uint4*>(&sm.wq[r][uu * 32]);
      if (row < n && u < u_end) {
        const ggml::Unit un = ggml::ReadRowUnit<T>(w + static_cast<int64_t>(row) * row_bytes, units, u);
        dst[0] = make_uint4(un.q[0], un.q[1], un.q[2], un.q[3]);
        dst[1] = make_uint4(un.q[4], un.q[5], un.q[6], un.q[7]);
        sm.ws[r][2 * uu] = un.scale[0];
        sm.ws[r][2 * uu + 1] = un.scale[1];
        sm.wm[r][2 * uu] = un.min[0];
        sm.wm[r][2 * uu + 1] = un.min[1];
      } else {
        dst[0] = dst[1] = make_uint4(0, 0, 0, 0);
        sm.ws[r][2 * uu] = sm.ws[r][2 * uu + 1] = 0.0f;
        sm.wm[r][2 * uu] = sm.wm[r][2 * uu + 1] = 0.0f;
      }
    }
    // Activations: 16-byte pieces of the tokens' codes, then their scales and sums.
    const int chunk_units = min(kChunkUnits, u_end - c0);
    for (int i = tid; i < BM * (kChunkBytes / 16); i += kThreads) {
      const int tk = i / (kChunkBytes / 16), piece = i % (kChunkBytes / 16), tok = tok0 + tk;
      int4 v = make_int4(0, 0, 0, 0);
      if (tok < tokens && piece * 16 < chunk_units * 32) {
        v = __ldg(reinterpret_cast<const int4*>(a.q + (static_cast<int64_t>(tok) * units + c0) * 32) + piece);
      }
      *reinterpret_cast<int4*>(&sm.xq[tk][piece * 16]) = v;
    }
    for (int i = tid; i < BM * kChunkUnits; i += kThreads) {
      const int tk = i / kChunkUnits, uu = i % kChunkUnits, tok = tok0 + tk;
      const bool live = tok < tokens && uu < chunk_units;
      const int64_t at = static_cast<int64_t>(tok) * units + c0 + uu;
      sm.xd[tk][uu] = live ? __ldg(a.d + at) : 0.0f;
      sm.xs[tk][2 * uu] = live ? __ldg(a.sum16 + 2 * at) : 0.0f;
      sm.xs[tk][2 * uu + 1] = live ? __ldg(a.sum16 + 2 * at + 1) : 0.0f;
    }
    __syncthreads();

    MultiplyChunk<T, BM>(sm, acc, r_lo, r_hi, g, t4);
  }
  StoreOutputs<BM>(acc, row0, tok0, r_lo, r_hi, t4, n, tokens, out, out_stride, f32_out, partials);
}

// One chunk's loads. The weights are read into registers by Fetch (ReadUnit decodes them there)
// before the previous chunk's MMAs and written to shared memory by Store after them; the
// activations (already int8, L2-resident) are copied straight into shared memory by cp.async.
// So a chunk's loads are in flight while the one before it is multiplied. Addresses are clamped
// into the matrix and the split, so the loads need no branch; what lies outside is zeros.
template <GgmlType T, int BM>
struct ChunkLoads {
  using Tr = ggml::Traits<T>;
  static constexpr int kUnitsPerThread = kRows * kChunkUnits / kThreads;
  static_assert(kUnitsPerThread * kThreads == kRows * kChunkUnits);
  ggml::Unit unit[kUnitsPerThread];
  bool live[kUnitsPerThread];

  __device__ void Fetch(const uint8_t* __restrict__ w, int64_t row_bytes, int n, int units, int u_end, int row0, int c0,
                        int tid) {
#pragma unroll
    for (int j = 0; j < kUnitsPerThread; ++j) {
      // Consecutive threads on consecutive units of a row.
      const int i = tid + j * kThreads, row = row0 + i / kChunkUnits, u = c0 + i % kChunkUnits;
      live[j] = row < n && u < u_end;
      const int rc = min(row, n - 1), uc = min(u, u_end - 1);
      unit[j] = ggml::ReadRowUnit<T>(w + static_cast<int64_t>(rc) * row_bytes, units, uc);
    }
  }

  __device__ void Store(Staged<BM>& sm, int tid) const {
#pragma unroll
    for (int j = 0; j < kUnitsPerThread; ++j) {
      const int i = tid + j * kThreads, r = i / kChunkUnits, uu = i % kChunkUnits;
      uint4* dst = reinterpret_cast<uint4*>(&sm.wq[r][uu * 32]);
      const ggml::Unit& un = unit[j];
      dst[0] = live[j] ? make_uint4(un.q[0], un.q[1], un.q[2], un.q[3]) : make_uint4(0, 0, 0, 0);
      dst[1] = live[j] ? make_uint4(un.q[4], un.q[5], un.q[6], un.q[7]) : make_uint4(0, 0, 0, 0);
      sm.ws[r][2 * uu] = live[j] ? un.scale[0] : 0.0f;
      sm.ws[r][2 * uu + 1] = live[j] ? un.scale[1] : 0.0f;
      sm.wm[r][2 * uu] = live[j] ? un.min[0] : 0.0f;
      sm.wm[r][2 * uu + 1] = live[j] ? un.min[1] : 0.0f;
    }
  }

  // The tokens' codes (16 bytes at a time), scales and sums for the chunk at c0; CopyAsyncWaitAll()
  // before reading them.
  static __device__ void CopyActivations(Staged<BM>& sm, const QuantizedActivations& a, int units, int u_end,
                                         int tokens, int tok0, int c0, int tid) {
    for (int i = tid; i < BM * (kChunkBytes / 16); i += kThreads) {
      const int tk = i / (kChunkBytes / 16), p = i % (kChunkBytes / 16), tok = tok0 + tk;
      const int64_t tc = min(tok, tokens - 1), uc = min(c0 + p / 2, u_end - 1);
      CopyAsyncN<16>(&sm.xq[tk][p * 16], a.q + (tc * units + uc) * 32 + (p % 2) * 16,
                     tok < tokens && c0 + p / 2 < u_end);
    }
    for (int i = tid; i < BM * kChunkUnits; i += kThreads) {
      const int tk = i / kChunkUnits, uu = i % kChunkUnits, tok = tok0 + tk;
      const bool live = tok < tokens && c0 + uu < u_end;
      const int64_t at = min(tok, tokens - 1) * static_cast<int64_t>(units) + min(c0 + uu, u_end - 1);
      CopyAsyncN<4>(&sm.xd[tk][uu], a.d + at, live);
      CopyAsyncN<4>(&sm.xs[tk][2 * uu], a.sum16 + 2 * at, live);
      CopyAsyncN<4>(&sm.xs[tk][2 * uu + 1], a.sum16 + 2 * at + 1, live);
    }
  }
};

// BlockGemmKernel's contract at 32 tokens a block, the next chunk's loads in flight while this one
// is multiplied (ChunkLoads): two shared-memory stages, so one barrier a chunk suffices (a stage
// is written while the other may still be read). Registers capped for 4 blocks an SM (the
// prefetched units take them to 100-140; a cap of 96 for 5 spilled). The default at 9-32 tokens
// for every type but Q8_0 (KVS_BLOCK_GEMM_PIPELINE=off for BlockGemmKernel): on an H100, layer 0 +
// LM head at 32 tokens, Q4_0 616 us against 683, Q4_K 812 against 938, Q8_0 762 against 765, and
// whole batch-32 steps Q4_0 7.99 ms against 9.18, Q4_K 9.63 against 10.72, Q8_0 9.65 against 9.21
// (docs/performance.md).
constexpr int kPipelinedTokens = 32;
template <GgmlType T>
__global__ void __launch_bounds__(kThreads, 4)
    PipelinedBlockGemmKernel(const uint8_t* __restrict__ w, int64_t row_bytes, int n, int units, int split_units,
                             QuantizedActivations a, int tokens, void* out, int64_t out_stride, bool f32_out,
                             float* __restrict__ partials) {
  constexpr int BM = kPipelinedTokens, kNT = BM / 8;
  static_assert(2 * sizeof(Staged<BM>) <= 48 * 1024, "two stages in static shared memory");
  __shared__ Staged<BM> stages[2];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int row0 = blockIdx.x * kRows, tok0 = blockIdx.y * BM;
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;  // this lane's rows in the block

  float acc[kNT][4];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;

  const int u_begin = blockIdx.z * split_units, u_end = min(units, u_begin + split_units);
  ChunkLoads<T, BM> loads;
  loads.Fetch(w, row_bytes, n, units, u_end, row0, u_begin, tid);
  loads.CopyActivations(stages[0], a, units, u_end, tokens, tok0, u_begin, tid);
  int stage = 0;
  for (int c0 = u_begin; c0 < u_end; c0 += kChunkUnits, stage ^= 1) {
    Staged<BM>& sm = stages[stage];
    loads.Store(sm, tid);
    CopyAsyncWaitAll();
    __syncthreads();
    // The next chunk's loads: its weights into registers (past the split's end: clamped, never
    // stored), its activations into the other stage, whose last reader (the chunk before this
    // one) every thread has finished at the barrier above.
    loads.Fetch(w, row_bytes, n, units, u_end, row0, c0 + kChunkUnits, tid);
    if (c0 + kChunkUnits < u_end) {
      loads.CopyActivations(stages[stage ^ 1], a, units, u_end, tokens, tok0, c0 + kChunkUnits, tid);
    }
    MultiplyChunk<T, BM>(sm, acc, r_lo, r_hi, g, t4);
  }
  StoreOutputs<BM>(acc, row0, tok0, r_lo, r_hi, t4, n, tokens, out, out_stride, f32_out, partials);
}

// out[t, row] = the sum of the splits' partials, in split order (the same sums on every run).
__global__ void SumSplitsKernel(const float* __restrict__ partials, int splits, int n, int tokens, void* out,
                                int64_t out_stride, bool f32_out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                total = static_cast<int64_t>(tokens) * n;
  if (i >= total) return;
  float sum = 0.0f;
  for (int z = 0; z < splits; ++z) sum += partials[z * total + i];
  const int64_t at = (i / n) * out_stride + i % n;
  if (f32_out) {
    static_cast<float*>(out)[at] = sum;
  } else {
    static_cast<__nv_bfloat16*>(out)[at] = __float2bfloat16_rn(sum);
  }
}

// How many splits along k: enough blocks to fill the GPU once (one block of 64 rows walking all of
// k left a 4,096-row matrix 64 blocks on 132 SMs, latency-bound: docs/performance.md), no split
// shorter than a chunk, the partials within the scratch, and their traffic (written and read
// once, f32) at most about the weights' own bytes.
int Splits(int resident, int64_t base_blocks, int chunks, int64_t row_bytes, int tokens, int n,
           int64_t scratch_floats) {
  int64_t s = (resident + base_blocks - 1) / base_blocks;
  s = std::min<int64_t>(s, chunks);
  s = std::min<int64_t>(s, std::max<int64_t>(1, row_bytes / (8 * static_cast<int64_t>(tokens))));
  s = std::min<int64_t>(s, scratch_floats / (static_cast<int64_t>(tokens) * n));
  return static_cast<int>(std::max<int64_t>(s, 1));
}

// KVS_BLOCK_GEMM=bf16-tiles or int8-mma: the two alternatives to kAuto, one environment variable.
KernelChoice g_bf16_tiles("KVS_BLOCK_GEMM", "bf16-tiles");
KernelChoice g_int8_mma("KVS_BLOCK_GEMM", "int8-mma");
// KVS_BLOCK_GEMM_PIPELINE=off: BlockGemmKernel where PipelinedBlockGemmKernel is the default.
KernelChoice g_unpipelined("KVS_BLOCK_GEMM_PIPELINE", "off");

template <GgmlType T>
struct GemmLaunch {
  static cudaError_t Run(const uint8_t* w, int64_t row_bytes, int n, int units, const QuantizedActivations& a,
                         int tokens, void* out, int64_t out_stride, bool f32_out, float* scratch,
                         int64_t scratch_floats, cudaStream_t stream) {
    if (!ggml::RowsAligned<T>(w, row_bytes)) return cudaErrorInvalidValue;
    // 32 tokens a block up to 32 (a decode batch reads each weight once), else 64.
    if (tokens <= 32) {
      return Launch<32>(w, row_bytes, n, units, a, tokens, out, out_stride, f32_out, scratch, scratch_floats, stream);
    }
    return Launch<64>(w, row_bytes, n, units, a, tokens, out, out_stride, f32_out, scratch, scratch_floats, stream);
  }
  template <int BM>
  static cudaError_t Launch(const uint8_t* w, int64_t row_bytes, int n, int units, const QuantizedActivations& a,
                            int tokens, void* out, int64_t out_stride, bool f32_out, float* scratch,
                            int64_t scratch_floats, cudaStream_t stream) {
    static_assert(sizeof(Staged<BM>) <= 48 * 1024, "static shared memory");
    // Q8_0's units are twice a 4-bit type's bytes: its prefetch gained nothing (see above).
    const bool pipelined = BM == kPipelinedTokens && T != GgmlType::kQ8_0 && !g_unpipelined.Alternative();
    const auto kernel = pipelined ? PipelinedBlockGemmKernel<T> : BlockGemmKernel<T, BM>;
    const int row_tiles = (n + kRows - 1) / kRows, token_tiles = (tokens + BM - 1) / BM;
    const int chunks = (units + kChunkUnits - 1) / kChunkUnits;
    const int resident = gemv::ResidentBlocks(kernel, kThreads);
    const int splits = scratch == nullptr ? 1
                                          : Splits(resident, static_cast<int64_t>(row_tiles) * token_tiles, chunks,
                                                   row_bytes, tokens, n, scratch_floats);
    const int split_units = (chunks + splits - 1) / splits * kChunkUnits;
    const int used = (units + split_units - 1) / split_units;  // splits that hold units
    const dim3 grid(row_tiles, token_tiles, used);
    kernel<<<grid, kThreads, 0, stream>>>(w, row_bytes, n, units, split_units, a, tokens, out, out_stride, f32_out,
                                          used > 1 ? scratch : nullptr);
    if (used > 1) {
      const int64_t total = static_cast<int64_t>(tokens) * n;
      SumSplitsKernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(scratch, used, n, tokens, out,
                                                                                      out_stride, f32_out);
    }
    return cudaGetLastError();
  }
};

}  // namespace

void SetBlockGemmPath(BlockGemmPath path) {
  g_bf16_tiles.Set(path == BlockGemmPath::kBf16Tiles);
  g_int8_mma.Set(path == BlockGemmPath::kInt8TensorCores);
}

void SetBlockGemmPipelined(bool on) { g_unpipelined.Set(!on); }

bool UseBlockGemm(int64_t tokens) {
  if (g_int8_mma.Alternative()) return tokens <= kBlockGemmMaxTokens;
  return !g_bf16_tiles.Alternative() && tokens <= kBlockGemmAutoMaxTokens;
}

bool UseF8TensorCores() { return !g_bf16_tiles.Alternative(); }

cudaError_t LaunchBlockGemm(GgmlType type, const void* w, int64_t row_bytes, int64_t n, int64_t k,
                            QuantizedActivations a, int64_t tokens, void* out, int64_t out_stride, bool f32_out,
                            float* scratch, int64_t scratch_floats, cudaStream_t stream) {
  if (tokens <= 0 || tokens > kBlockGemmMaxTokens || k % 32 != 0 || n > (int64_t{1} << 30))
    return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  return ggml::DispatchBlockType<GemmLaunch>(type, static_cast<const uint8_t*>(w), row_bytes, static_cast<int>(n),
                                             static_cast<int>(k / 32), a, static_cast<int>(tokens), out, out_stride,
                                             f32_out, scratch, scratch_floats, stream);
}

}  // namespace kvs::cuda
