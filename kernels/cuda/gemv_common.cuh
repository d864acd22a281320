// What the weight GEMVs share (block_linear.cu for GGML's types, f8_linear.cu for F8_E4M3,
// bf16_gemv.cu): the launch shape, the resident grid, the streamed weight loads and the end of a row
// (each warp's per-token sums reduced, the row's warps merged, one lane storing the outputs, or
// the gated activation of a gate row and an up row).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/gated_activation.cuh"
#include "kernels/cuda/pdl.cuh"

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

// A 16-byte piece of weights, read once: kept out of L1 (ld.global.nc.L1::no_allocate), which then
// holds the activations that every row of the block re-reads.
__device__ __forceinline__ uint4 LoadStreamed(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Before the wait for the previous kernel (pdl.cuh): the L2 lines of this block's first row group,
// each warp its row's share, so the weights stream in while the activations are still being made.
// Weights are written by nothing a step runs, so reading them early is safe; later groups are not
// prefetched (one group a block is ~one matrix at the Llama-3-8B attention shapes, and more would
// only evict what the first group needs).
template <int kRowsPerBlock, int kWarpsPerRow>
__device__ __forceinline__ void PrefetchFirstRows(const uint8_t* w, int64_t row_bytes, int n, int lane, int warp,
                                                  int part) {
  const int row = blockIdx.x * kRowsPerBlock + warp / kWarpsPerRow;
  if (row >= n) return;
  const uint8_t* wr = w + static_cast<int64_t>(row) * row_bytes;
  for (int64_t off = 128 * static_cast<int64_t>(lane + kWarp * part); off < row_bytes;
       off += 128 * kWarp * kWarpsPerRow) {
    pdl::PrefetchL2(wr + off);
  }
}

// The end of one row group: acc[t] is this lane's share of token t's dot; kWarpsPerRow warps (warp
// `part` of them) share the row, in blocks of kBlockWarps warps. Afterwards lane 0 of warp part 0
// holds the row's sums. Every thread of the block calls it (it synchronises the block).
template <int kMaxTokens, int kWarpsPerRow, int kBlockWarps = kWarps>
__device__ __forceinline__ void ReduceRow(float (&acc)[kMaxTokens], int lane, int warp, int part) {
#pragma unroll
  for (int t = 0; t < kMaxTokens; ++t) {
    for (int o = 16; o > 0; o /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
  if constexpr (kWarpsPerRow > 1) {
    __shared__ float partial[kBlockWarps][kMaxTokens];
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
}

// ReduceRow, then one lane stores the row's outputs (bf16, or f32 where f32_out).
template <int kMaxTokens, int kWarpsPerRow, int kBlockWarps = kWarps>
__device__ __forceinline__ void FinishRow(float (&acc)[kMaxTokens], int lane, int warp, int part, int row, int n,
                                          int tokens, void* out, int64_t out_stride, bool f32_out) {
  ReduceRow<kMaxTokens, kWarpsPerRow, kBlockWarps>(acc, lane, warp, part);
  if (part == 0 && lane == 0 && row < n) {
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < tokens) {
        if (f32_out) {
          static_cast<float*>(out)[t * out_stride + row] = acc[t];
        } else {
          static_cast<__nv_bfloat16*>(out)[t * out_stride + row] = __float2bfloat16_rn(acc[t]);
        }
      }
    }
  }
}

// The end of a gated row (one token): gu[0] and gu[1] are this lane's shares of the gate row's and
// the up row's dots; out[row] = act(g) * u as the elementwise kernel computes it from the two
// rows' bf16 outputs (gated_activation.cuh), so the fused and the two-kernel paths agree bit for bit.
template <typename Act, int kWarpsPerRow, int kBlockWarps = kWarps>
__device__ __forceinline__ void FinishGatedRow(float (&gu)[2], int lane, int warp, int part, int row, int n,
                                               __nv_bfloat16* out) {
  ReduceRow<2, kWarpsPerRow, kBlockWarps>(gu, lane, warp, part);
  if (part == 0 && lane == 0 && row < n) {
    out[row] = GatedOutput<Act>(__float2bfloat16_rn(gu[0]), __float2bfloat16_rn(gu[1]));
  }
}

}  // namespace kvs::cuda::gemv
