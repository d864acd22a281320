// On-GPU sampling. Greedy: one block per row reduces (value, index) pairs, lowest index on ties.
// Temperature / top-k / top-p: one block per draw applies the rule of kernels/cpu/sampling.h
// without sorting the vocabulary:
//   - top-k: radix select (4 passes of 8 bits over order-preserving keys) finds the k-th largest
//     logit; ties at it are kept in id order by one block-wide prefix count;
//   - top-p: the same radix select over weight instead of count finds the logit at which the
//     ranked prefix reaches top_p x total, ties again resolved in id order;
//   - the draw: each thread owns a contiguous id range, a block-wide prefix sum of their weights
//     finds the range holding u x total and that thread walks it.
// Each pass re-reads the row (a 128K-token vocabulary is 512 KiB, resident in L2).
#include <cfloat>
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ inline void Better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__global__ void __launch_bounds__(kThreads) ArgmaxKernel(const float* logits, int64_t stride, int64_t cols, int32_t first_id,
                                                          int32_t* ids, float* values) {
  const float* row = logits + blockIdx.x * stride;
  float best = -FLT_MAX;
  int idx = 0x7fffffff;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) Better(best, idx, row[c], static_cast<int>(c));
  for (int o = 16; o > 0; o >>= 1) Better(best, idx, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, idx, o));
  __shared__ float sv[kWarps];
  __shared__ int si[kWarps];
  if ((threadIdx.x & 31) == 0) {
    sv[threadIdx.x >> 5] = best;
    si[threadIdx.x >> 5] = idx;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    best = sv[threadIdx.x];
    idx = si[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) Better(best, idx, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (threadIdx.x == 0) {
      ids[blockIdx.x] = first_id + idx;
      if (values != nullptr) values[blockIdx.x] = best;
    }
  }
}

// Larger float <=> larger key (NaN aside), so selecting on keys selects on logits.
__device__ inline uint32_t OrderKey(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Block-wide sum; every thread gets the result. `scratch` holds kWarps values.
template <typename T>
__device__ T BlockSum(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // scratch may still be read by a previous call
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// Exclusive prefix sum over threads in thread order. `scratch` holds kWarps values.
template <typename T>
__device__ T BlockExclusiveScan(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T inclusive = v;
  for (int o = 1; o < 32; o <<= 1) {
    const T up = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  T before = 0;
  for (int w = 0; w < warp; ++w) before += scratch[w];
  return before + inclusive - v;
}

struct SampleShared {
  uint32_t count[256];
  double mass[256];
  double dsum[kWarps];
  int32_t isum[kWarps];
  float fmax[kWarps];
  int32_t imax[kWarps];
  uint32_t prefix, mask;
  int32_t remaining;
  double above;
  int32_t pick;
};

// Which tokens survive top-k and top-p: key above the threshold, or equal to it with an id at
// most the tie cut-off.
struct Cut {
  uint32_t key = 0;     // threshold key (0: everything passes)
  int32_t last_tie = 0x7fffffff;
  __device__ bool Keeps(uint32_t k, int32_t i) const { return k > key || (k == key && i <= last_tie); }
};

// The id of the `rank`-th (1-based, in id order) token with key == `key` that `eligible` admits,
// where `weigh` gives each such token's contribution (1 for a count, its weight for a mass) and
// the search ends where the running total first reaches `rank`. Threads own contiguous ranges.
template <typename Eligible, typename Weigh, typename T>
__device__ int32_t TieCutoff(const float* row, int32_t cols, uint32_t key, T rank, Eligible eligible, Weigh weigh,
                             SampleShared& sh, T* scan_scratch) {
  const int32_t chunk = (cols + kThreads - 1) / kThreads;
  const int32_t begin = min(cols, static_cast<int32_t>(threadIdx.x) * chunk), end = min(cols, begin + chunk);
  T mine = 0;
  int32_t last = -1;
  for (int32_t i = begin; i < end; ++i) {
    const float x = row[i];
    if (OrderKey(x) == key && eligible(i)) {
      mine += weigh(x);
      last = i;
    }
  }
  const T before = BlockExclusiveScan(mine, scan_scratch);
  if (threadIdx.x == 0) sh.pick = 0x7fffffff;
  __syncthreads();
  if (before + mine >= rank && before < rank) {
    T run = before;
    for (int32_t i = begin; i < end; ++i) {
      const float x = row[i];
      if (OrderKey(x) == key && eligible(i)) {
        run += weigh(x);
        if (run >= rank) {
          atomicMin(&sh.pick, i);
          break;
        }
      }
    }
  }
  // Rounding can leave the total short of `rank`: then every tie is kept.
  int32_t last_all = last;
  for (int o = 16; o > 0; o >>= 1) last_all = max(last_all, __shfl_xor_sync(0xffffffffu, last_all, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) atomicMax(&sh.remaining, last_all);  // reuse: max tie id
  __syncthreads();
  const int32_t cut = sh.pick != 0x7fffffff ? sh.pick : sh.remaining;
  __syncthreads();
  return cut;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(const float* logits, int64_t stride, int32_t rows, int32_t cols,
                                                          const SampleRequest* requests, int32_t* ids) {
  __shared__ SampleShared sh;
  const SampleRequest req = requests[blockIdx.x];
  if (req.row < 0 || req.row >= rows) {
    if (threadIdx.x == 0) ids[blockIdx.x] = -1;
    return;
  }
  const float* row = logits + static_cast<int64_t>(req.row) * stride;

  // The maximum (the first one: greedy's answer).
  float best = -FLT_MAX;
  int best_id = 0x7fffffff;
  for (int32_t c = threadIdx.x; c < cols; c += kThreads) Better(best, best_id, row[c], c);
  for (int o = 16; o > 0; o >>= 1) {
    Better(best, best_id, __shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, best_id, o));
  }
  if ((threadIdx.x & 31) == 0) {
    sh.fmax[threadIdx.x >> 5] = best;
    sh.imax[threadIdx.x >> 5] = best_id;
  }
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) Better(best, best_id, sh.fmax[w], sh.imax[w]);
  if (req.temperature <= 0.0f) {
    if (threadIdx.x == 0) ids[blockIdx.x] = best_id;
    return;
  }
  const float max_logit = best;
  const float temperature = req.temperature;
  auto weight = [&](float x) { return expf((x - max_logit) / temperature); };

  // Top-k: the k-th largest key, most significant byte first.
  Cut topk;
  if (req.top_k > 0 && req.top_k < cols) {
    if (threadIdx.x == 0) {
      sh.prefix = 0;
      sh.mask = 0;
      sh.remaining = req.top_k;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = threadIdx.x; b < 256; b += kThreads) sh.count[b] = 0;
      __syncthreads();
      const uint32_t prefix = sh.prefix, mask = sh.mask;
      for (int32_t c = threadIdx.x; c < cols; c += kThreads) {
        const uint32_t k = OrderKey(row[c]);
        if ((k & mask) == prefix) atomicAdd(&sh.count[(k >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int32_t remaining = sh.remaining;
        int b = 255;
        for (; b > 0; --b) {
          if (static_cast<int32_t>(sh.count[b]) >= remaining) break;
          remaining -= sh.count[b];
        }
        sh.prefix = prefix | (static_cast<uint32_t>(b) << shift);
        sh.mask = mask | (255u << shift);
        sh.remaining = remaining;
      }
      __syncthreads();
    }
    topk.key = sh.prefix;
    const int32_t need = sh.remaining;  // ties at the threshold still to keep, in id order
    __syncthreads();
    if (threadIdx.x == 0) sh.remaining = -1;
    __syncthreads();
    topk.last_tie = TieCutoff(
        row, cols, topk.key, need, [](int32_t) { return true; }, [](float) { return 1; }, sh, sh.isum);
  }

  // Top-p over the survivors of top-k: the same selection, by weight.
  Cut topp;
  if (req.top_p < 1.0f) {
    double kept = 0.0;
    for (int32_t c = threadIdx.x; c < cols; c += kThreads) {
      const float x = row[c];
      if (topk.Keeps(OrderKey(x), c)) kept += weight(x);
    }
    const double reach = static_cast<double>(req.top_p) * BlockSum(kept, sh.dsum);
    if (threadIdx.x == 0) {
      sh.prefix = 0;
      sh.mask = 0;
      sh.above = 0.0;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = threadIdx.x; b < 256; b += kThreads) {
        sh.count[b] = 0;
        sh.mass[b] = 0.0;
      }
      __syncthreads();
      const uint32_t prefix = sh.prefix, mask = sh.mask;
      for (int32_t c = threadIdx.x; c < cols; c += kThreads) {
        const float x = row[c];
        const uint32_t k = OrderKey(x);
        if ((k & mask) == prefix && topk.Keeps(k, c)) {
          atomicAdd(&sh.count[(k >> shift) & 255u], 1u);
          atomicAdd(&sh.mass[(k >> shift) & 255u], static_cast<double>(weight(x)));
        }
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        double above = sh.above;
        int b = 255, lowest = -1;
        for (; b >= 0; --b) {
          if (sh.count[b] == 0) continue;
          lowest = b;
          if (above + sh.mass[b] >= reach) break;
          above += sh.mass[b];
        }
        if (b < 0) {  // rounding fell short: keep everything down to the lowest bin
          b = lowest;
          above -= sh.mass[b];
        }
        sh.prefix = prefix | (static_cast<uint32_t>(b) << shift);
        sh.mask = mask | (255u << shift);
        sh.above = above;
      }
      __syncthreads();
    }
    topp.key = sh.prefix;
    const double need = reach - sh.above;  // weight still to take from ties at the threshold
    __syncthreads();
    if (threadIdx.x == 0) sh.remaining = -1;
    __syncthreads();
    topp.last_tie = TieCutoff(
        row, cols, topp.key, need, [&](int32_t i) { return topk.Keeps(topp.key, i); },
        [&](float x) { return static_cast<double>(weight(x)); }, sh, sh.dsum);
  }

  // The draw: u x (kept weight), found in id order.
  const int32_t chunk = (cols + kThreads - 1) / kThreads;
  const int32_t begin = min(cols, static_cast<int32_t>(threadIdx.x) * chunk), end = min(cols, begin + chunk);
  double mine = 0.0;
  int32_t last_kept = -1;
  for (int32_t i = begin; i < end; ++i) {
    const float x = row[i];
    const uint32_t k = OrderKey(x);
    if (topk.Keeps(k, i) && topp.Keeps(k, i)) {
      mine += weight(x);
      last_kept = i;
    }
  }
  const double before = BlockExclusiveScan(mine, sh.dsum);
  const double total = BlockSum(mine, sh.dsum);
  const double target = static_cast<double>(req.uniform) * total;
  if (threadIdx.x == 0) {
    sh.pick = 0x7fffffff;
    sh.remaining = -1;
  }
  __syncthreads();
  if (before <= target && target < before + mine) {
    double t = target - before;
    for (int32_t i = begin; i < end; ++i) {
      const float x = row[i];
      const uint32_t k = OrderKey(x);
      if (topk.Keeps(k, i) && topp.Keeps(k, i)) {
        t -= weight(x);
        if (t < 0.0) {
          atomicMin(&sh.pick, i);
          break;
        }
      }
    }
  }
  for (int o = 16; o > 0; o >>= 1) last_kept = max(last_kept, __shfl_xor_sync(0xffffffffu, last_kept, o));
  if ((threadIdx.x & 31) == 0) atomicMax(&sh.remaining, last_kept);
  __syncthreads();
  if (threadIdx.x == 0) ids[blockIdx.x] = sh.pick != 0x7fffffff ? sh.pick : sh.remaining;
}

}  // namespace

cudaError_t LaunchArgmaxRows(const float* logits, int64_t stride, int64_t rows, int64_t cols, int32_t first_id,
                             int32_t* ids, float* values, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  ArgmaxKernel<<<rows, kThreads, 0, stream>>>(logits, stride, cols, first_id, ids, values);
  return cudaGetLastError();
}

cudaError_t LaunchSampleRows(const float* logits, int64_t stride, int32_t rows, int32_t cols,
                             const SampleRequest* requests, int32_t count, int32_t* ids, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  SampleKernel<<<count, kThreads, 0, stream>>>(logits, stride, rows, cols, requests, ids);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
