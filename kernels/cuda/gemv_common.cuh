// What the weight GEMVs of weights kept in blocks share (block_linear.cu for GGML's types,
// f8_linear.cu for F8_E4M3): the launch shape, the resident grid, and the end of a row (each warp's
// per-token sums reduced, the row's warps merged, then cuda_kernels.h's GemvEpilogue: stored, or
// fused with the op that follows at decode — the gated activation of a gate/up projection, or the
// residual add and RMSNorm after an output projection — so that op needs no kernel of its own).
//
// The fused forms need results other blocks make: 32 consecutive gated outputs for one rounding
// unit, every row of the residual for its norm. Each block counts what it finished in a zeroed
// counter (a fence after its stores, then an atomic add), and the block whose count completes the
// set does the rest, reading the others' results through L2, and zeroes the counter for the next
// launch (threadFenceReduction's pattern). The counters are used by one kernel at a time: the
// stream orders the launches, and a kernel touches them only after its wait for the previous one.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gated_activation.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rms_norm_row.cuh"

namespace kvs::cuda::gemv {

constexpr int kWarp = 32;
constexpr int kWarps = 4;  // per block of threads
// Rows below which a row gets four warps: fewer than ~32 warps per SM of an H100/H200 otherwise.
constexpr int kNarrowRows = 4096;

// Blocks of `kernel` the whole GPU holds at once with `threads` a block, asked once per kernel
// (the answer is fixed). Kept by the kernel's address: the kernels of one signature (every type and
// token count of a GEMV) share one C++ type, so a static in a template of that type gave them all
// the answer of whichever launched first.
inline int ResidentBlocks(const void* kernel, int threads) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> known;
  const std::lock_guard<std::mutex> lock(mu);
  const auto [it, added] = known.try_emplace({kernel, threads}, 1);
  if (added) {
    int device = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0);
    it->second = std::max(1, sms * per_sm);
  }
  return it->second;
}
template <typename Kernel>
int ResidentBlocks(Kernel* kernel, int threads) {
  return ResidentBlocks(reinterpret_cast<const void*>(kernel), threads);
}

// The weight row that row slot j of a GEMV over n rows computes: row j, or for the gated epilogue
// gate and up rows in turns (slot 2i gate row i, slot 2i + 1 up row i), so that a block's adjacent
// warps hold the two halves of one output.
__device__ __forceinline__ int WeightRow(int j, int n, bool gated) { return gated ? (j & 1) * (n / 2) + j / 2 : j; }

// Before the wait for the previous kernel (pdl.cuh): the L2 lines of this block's first row group,
// each warp its row's share, so the weights stream in while the activations are still being made.
// Weights are written by nothing a step runs, so reading them early is safe; later groups are not
// prefetched (one group a block is ~one matrix at the Llama-3-8B attention shapes, and more would
// only evict what the first group needs).
template <int kRowsPerBlock, int kWarpsPerRow>
__device__ __forceinline__ void PrefetchFirstRows(const uint8_t* w, int64_t row_bytes, int n, bool gated, int lane,
                                                  int warp, int part) {
  const int row = blockIdx.x * kRowsPerBlock + warp / kWarpsPerRow;
  if (row >= n) return;
  const uint8_t* wr = w + static_cast<int64_t>(WeightRow(row, n, gated)) * row_bytes;
  for (int64_t off = 128 * static_cast<int64_t>(lane + kWarp * part); off < row_bytes;
       off += 128 * kWarp * kWarpsPerRow) {
    pdl::PrefetchL2(wr + off);
  }
}

__device__ __forceinline__ float Bf16Rounded(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

using Fuse = GemvEpilogue::Fuse;

// The fused epilogues' work is in functions of their own (not inlined), called once a row group or
// once a block: inlined, their registers and the operands they hoist out of the group loop made
// the 1- and 2-token GEMVs (40 registers a thread) spill inside their loop. The kernels take the
// epilogue as a __grid_constant__ parameter, so these read it where it lies.

// kGated, after a group's sums (sums[w][t]: warp w's row slot first + w, kMaxTokens apart): slot
// pairs (2i, 2i + 1) are gate and up of output i. Every thread of the block calls it.
static __device__ __noinline__ void GatedGroupEnd(const float* sums, int max_tokens, int first, int n, int tokens,
                                                  const GemvEpilogue& e) {
  constexpr int kRowsPerBlock = kWarps;  // one warp a row
  __shared__ int rounds_unit;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  auto* out = static_cast<bf16*>(e.out);
  if (lane == 0 && (warp & 1) == 0 && first + warp < n) {
    const int i = (first + warp) / 2;
    for (int t = 0; t < tokens; ++t) {
      const float g = Bf16Rounded(sums[warp * max_tokens + t]), u = Bf16Rounded(sums[(warp + 1) * max_tokens + t]);
      out[t * e.out_stride + i] = __float2bfloat16(e.gelu_tanh ? GeluTanh()(g) * u : Silu()(g) * u);
    }
    if (e.round.q != nullptr) __threadfence();  // before the count that may let another block read them
  }
  __syncthreads();  // the sums are rewritten by the next group
  if (e.round.q == nullptr) return;
  // The block's outputs lie in one unit of 32 (first is a multiple of kRowsPerBlock): the block
  // that completes the unit rounds it.
  constexpr int kGroupsPerUnit = 32 / (kRowsPerBlock / 2);
  if (threadIdx.x == 0) {
    rounds_unit = -1;
    if (first < n) {
      const int unit = first / 2 / 32;
      if (atomicAdd(e.counters + unit, 1) == kGroupsPerUnit - 1) {
        e.counters[unit] = 0;  // every count of this launch is in
        rounds_unit = unit;
      }
    }
  }
  __syncthreads();
  const int unit = rounds_unit;
  if (unit >= 0 && warp == 0) {
    __threadfence();
    const int inter = n / 2;
    for (int t = 0; t < tokens; ++t) {
      const float v[1] = {__bfloat162float(__ldcg(out + t * e.out_stride + 32 * unit + lane))};
      rounding::RoundUnit<1>(v, true, t, unit, inter / 32, e.round, true);
    }
  }
  __syncthreads();  // rounds_unit is rewritten by the next group
}

// kAddNorm, after a block's last group: the block that finishes last normalizes the residual's
// rows (n a token) into e.out, as the vector RMSNorm kernel would. Every thread calls it.
static __device__ __noinline__ void AddNormGridEnd(int n, int tokens, const GemvEpilogue& e) {
  __shared__ bool last;
  __syncthreads();  // every row of this block added (each fenced)
  if (threadIdx.x == 0) {
    last = atomicAdd(e.counters + kGemvCounters - 1, 1) == static_cast<int>(gridDim.x) - 1;
    if (last) e.counters[kGemvCounters - 1] = 0;  // every block's count is in
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int t = 0; t < tokens; ++t) {
    norm::NormRowAsVecKernel<kWarps * kWarp>(e.residual + t * e.residual_stride, e.norm_weight, n, e.eps,
                                             static_cast<bf16*>(e.out) + t * e.out_stride, t, e.round);
  }
}

// The end of one row group: acc[t] is this lane's share of token t's dot; kWarpsPerRow warps (warp
// `part` of them) share row slot `row`. Every thread of the block calls it (it synchronises the block).
template <int kMaxTokens, int kWarpsPerRow, Fuse kFuse>
__device__ __forceinline__ void FinishRow(float (&acc)[kMaxTokens], int lane, int warp, int part, int row, int n,
                                          int tokens, const GemvEpilogue& e) {
#pragma unroll
  for (int t = 0; t < kMaxTokens; ++t) {
    for (int o = 16; o > 0; o /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if constexpr (kWarpsPerRow > 1) {
    __shared__ float partial[kWarps][kMaxTokens];
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < kMaxTokens; ++t) partial[warp][t] = acc[t];
    }
    __syncthreads();
    if (part == 0) {
#pragma unroll
      for (int t = 0; t < kMaxTokens; ++t) {
        for (int p = 1; p < kWarpsPerRow; ++p) acc[t] += partial[warp + p][t];
      }
    }
    __syncthreads();  // partial is rewritten by the next group
  }
  if constexpr (kFuse == Fuse::kGated) {
    static_assert(kWarpsPerRow == 1, "gate and up rows of one output in one block");
    __shared__ float sums[kWarps][kMaxTokens];
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < kMaxTokens; ++t) sums[warp][t] = acc[t];
    }
    __syncthreads();
    GatedGroupEnd(&sums[0][0], kMaxTokens, row - warp, n, tokens, e);
  } else if constexpr (kFuse == Fuse::kAddNorm) {
    if (part != 0 || lane != 0 || row >= n) return;
      // The residual's update as LaunchAddRmsNorm adds it: the product rounded to bf16 first.
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < tokens) e.residual[t * e.residual_stride + row] += Bf16Rounded(acc[t]);
    }
    __threadfence();  // before the block's count (FinishGrid)
  } else {
    if (part != 0 || lane != 0 || row >= n) return;
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < tokens) {
        if (e.f32_out) {
          static_cast<float*>(e.out)[t * e.out_stride + row] = acc[t];
        } else {
          static_cast<__nv_bfloat16*>(e.out)[t * e.out_stride + row] = __float2bfloat16_rn(acc[t]);
        }
      }
    }
  }
}

// After a block's last group (every thread calls it).
template <Fuse kFuse>
__device__ __forceinline__ void FinishGrid(int n, int tokens, const GemvEpilogue& e) {
  if constexpr (kFuse == Fuse::kAddNorm) AddNormGridEnd(n, tokens, e);
}

}  // namespace kvs::cuda::gemv
