// The second pass of split-K attention (flash-decoding): the kernels that split a row's keys
// write, per split, an unnormalised output with its running max (log2 domain) and sum into the
// workspace (Params::partial_out / partial_ml); CombineSplits merges them into the row's output.
// Shared by the tiled kernels (paged_attention_kernels.cuh) and the channel-quantized one
// (paged_attention_kivi.cu).
#pragma once

#include "kernels/cuda/activation_rounding.cuh"
#include "kernels/cuda/paged_attention_common.cuh"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace attention {

// out[t, h] = sum_s w_s * partial_s / sum_s w_s * l_s with w_s = 2^(m_s - max m). One block per
// (token, head): the split weights are computed in parallel into shared memory, then each thread
// sums its head-dimension column over the splits with independent loads in flight (a thread per
// column walking the splits serially measured 24 us for 49 splits: latency-bound).
//
// kEarlyPartials (at most kEarlySplits splits and a column a thread, which a batch-1 step's splits
// are): each thread's column of every split's partial output is loaded with the maxima, before the
// weights, so the kernel waits on one round of loads instead of two (the maxima, then the
// partials): 1.1% off a batch-1 F8 step of the Llama-3-8B shape on an H100 (docs/performance.md).
// The same sum in the same order as the loop over more splits, so the same bits.
constexpr int kCombineThreads = 128;
constexpr int kEarlySplits = 8;
template <int D, bool kEarlyPartials = false>
__global__ void __launch_bounds__(kCombineThreads) CombineSplitsKernel(Params p) {
  pdl::StartAfterPrevious();
  extern __shared__ float split_weight[];  // [num_splits]
  __shared__ float reduce[kCombineThreads / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * p.q_heads + blockIdx.y;
  const int64_t split_stride = static_cast<int64_t>(p.num_tokens) * p.q_heads;
  float early[kEarlyPartials ? kEarlySplits : 1];
  if constexpr (kEarlyPartials) {
    static_assert(D <= kCombineThreads, "a column a thread");
#pragma unroll
    for (int s = 0; s < kEarlySplits; ++s) {
      early[s] = s < p.num_splits && tid < D ? p.partial_out[(s * split_stride + row) * D + tid] : 0.0f;
    }
  }
  float m = -FLT_MAX;
  for (int s = tid; s < p.num_splits; s += kCombineThreads) m = fmaxf(m, p.partial_ml[(s * split_stride + row) * 2]);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) reduce[warp] = m;
  __syncthreads();
  m = reduce[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) m = fmaxf(m, reduce[w]);
  __syncthreads();
  float den = 0.0f;
  for (int s = tid; s < p.num_splits; s += kCombineThreads) {
    const int64_t idx = s * split_stride + row;
    const float ls = p.partial_ml[idx * 2 + 1];
    const float w = ls == 0.0f ? 0.0f : exp2f(p.partial_ml[idx * 2] - m);  // 0: the split saw no key
    split_weight[s] = w;
    den += w * ls;
  }
  for (int o = 16; o > 0; o >>= 1) den += __shfl_xor_sync(0xffffffffu, den, o);
  if (lane == 0) reduce[warp] = den;
  __syncthreads();
  den = 0.0f;
  for (int w = 0; w < kCombineThreads / 32; ++w) den += reduce[w];
  for (int d = tid; d < D; d += kCombineThreads) {
    float num = 0.0f;
    if constexpr (kEarlyPartials) {
#pragma unroll
      for (int s = 0; s < kEarlySplits; ++s) {
        if (s < p.num_splits) {
          const float w = split_weight[s];
          if (w != 0.0f) num += w * early[s];  // empty splits hold no data
        }
      }
    } else {
#pragma unroll 8
      for (int s = 0; s < p.num_splits; ++s) {
        const float w = split_weight[s];
        if (w != 0.0f) num += w * p.partial_out[(s * split_stride + row) * D + d];  // empty splits hold no data
      }
    }
    const bf16 o = __float2bfloat16(num / den);
    p.out[static_cast<int64_t>(blockIdx.x) * p.out_stride + blockIdx.y * D + d] = o;
    if constexpr (D % 32 == 0) {
      // A warp's 32 columns are a unit of the block GEMV's rounding; whole warps run each pass.
      if (p.round.q != nullptr) {
        const float v[1] = {__bfloat162float(o)};
        rounding::RoundUnit<1>(v, true, blockIdx.x, static_cast<int>((blockIdx.y * D + d) / 32), p.q_heads * D / 32,
                               p.round, true);
      }
    }
  }
}

// After a kernel that wrote per-split partials (p.num_splits > 1): their weighted sum.
template <int D>
cudaError_t CombineSplits(cudaError_t err, const Params& p, cudaStream_t stream) {
  if (err != cudaSuccess || p.num_splits == 1) return err;
  auto kernel = CombineSplitsKernel<D>;
  if constexpr (D <= kCombineThreads) {
    if (p.num_splits <= kEarlySplits) {
      kernel = CombineSplitsKernel<D, true>;
      CountCombineEarlyLaunch();
    }
  }
  err = pdl::Launch(kernel, dim3(p.num_tokens, p.q_heads), kCombineThreads, p.num_splits * sizeof(float), stream, p);
  if (err == cudaSuccess && D % 32 == 0 && p.round.q != nullptr && p.rounded != nullptr) *p.rounded = true;
  return err;
}

}  // namespace attention
}  // namespace kvs::cuda
