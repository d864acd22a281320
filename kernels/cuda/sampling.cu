// On-GPU sampling. Greedy: one block per row reduces (value, index) pairs, lowest index on ties.
// Temperature / top-k / top-p: one block per draw applies the rule of kernels/common/sampling.h
// without sorting the vocabulary:
//   - top-k: radix select (8 passes of 4 bits over order-preserving keys, per-thread histogram
//     columns in shared memory) finds the k-th largest logit; ties at it are kept in id order
//     by one block-wide prefix count;
//   - top-p: the same radix select over weight instead of count finds the logit at which the
//     ranked prefix reaches top_p x total, ties again resolved in id order;
//   - the draw: each thread owns a contiguous id range, a block-wide prefix sum of their weights
//     finds the range holding u x total and that thread walks it.
// Each pass re-reads the row (a 128K-token vocabulary is 512 KiB, resident in L2) with float4
// loads, several in flight per thread.
#include <cfloat>
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"

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
  pdl::StartAfterPrevious();
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

// Every element of a row, thread-strided (coalesced), four at a time where the row allows:
// several loads in flight per thread, so a pass is bound by L2 bandwidth, not latency.
template <typename Fn>
__device__ void ForEachStrided(const float* row, int32_t cols, bool vec4, Fn fn) {
  int32_t done = 0;
  if (vec4) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const int32_t n4 = cols / 4;
#pragma unroll 4
    for (int32_t v = threadIdx.x; v < n4; v += kThreads) {
      const float4 q = row4[v];
      fn(4 * v, q.x);
      fn(4 * v + 1, q.y);
      fn(4 * v + 2, q.z);
      fn(4 * v + 3, q.w);
    }
    done = n4 * 4;
  }
  for (int32_t c = done + threadIdx.x; c < cols; c += kThreads) fn(c, row[c]);
}

// This thread's contiguous share of the row, in id order (for prefix sums over ids).
struct Chunk {
  int32_t begin, end;
};
__device__ inline Chunk MyChunk(int32_t cols) {
  const int32_t per = (((cols + kThreads - 1) / kThreads) + 3) & ~3;  // a multiple of 4
  const int32_t begin = min(cols, static_cast<int32_t>(threadIdx.x) * per);
  return {begin, min(cols, begin + per)};
}
template <typename Fn>
__device__ bool ForEachInChunk(const float* row, Chunk ch, bool vec4, Fn fn) {  // fn returns true to stop
  int32_t i = ch.begin;
  if (vec4) {
    for (; i + 4 <= ch.end; i += 4) {
      const float4 q = *reinterpret_cast<const float4*>(row + i);
      if (fn(i, q.x) || fn(i + 1, q.y) || fn(i + 2, q.z) || fn(i + 3, q.w)) return true;
    }
  }
  for (; i < ch.end; ++i) {
    if (fn(i, row[i])) return true;
  }
  return false;
}

// Radix selection works on 4-bit digits of the key, most significant first. Each thread counts
// into its own column of a [16][kThreads] shared table (no atomics, no contention even when a
// whole vocabulary lands in one bin), and then one warp per bin adds up its row.
constexpr int kDigitBits = 4;
constexpr int kBins = 1 << kDigitBits;
struct Histogram {
  float mass[kBins][kThreads];
  int32_t count[kBins][kThreads];
};
constexpr size_t kHistogramBytes = sizeof(Histogram);

struct SampleShared {
  double bin_mass[kBins];
  int32_t bin_count[kBins];
  double dsum[kWarps];
  int32_t isum[kWarps];
  float fmax[kWarps];
  int32_t imax[kWarps];
  uint32_t prefix, mask;
  int32_t remaining;
  double above;
  int32_t pick, last;
};

// Adds the thread columns of every bin into sh.bin_count / sh.bin_mass.
__device__ void ReduceBins(Histogram& h, SampleShared& sh, bool with_mass) {
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp < kBins) {
    int32_t c = 0;
    double m = 0.0;
    for (int t = lane; t < kThreads; t += 32) {
      c += h.count[warp][t];
      if (with_mass) m += h.mass[warp][t];
    }
    for (int o = 16; o > 0; o >>= 1) {
      c += __shfl_xor_sync(0xffffffffu, c, o);
      m += __shfl_xor_sync(0xffffffffu, m, o);
    }
    if (lane == 0) {
      sh.bin_count[warp] = c;
      sh.bin_mass[warp] = m;
    }
  }
  __syncthreads();
}

// Which tokens survive top-k and top-p: key above the threshold, or equal to it with an id at
// most the tie cut-off.
struct Cut {
  uint32_t key = 0;  // threshold key (0: everything passes)
  int32_t last_tie = 0x7fffffff;
  __device__ bool Keeps(uint32_t k, int32_t i) const { return k > key || (k == key && i <= last_tie); }
};

// Among the tokens with key == `key` that `eligible` admits, in id order: the id at which the
// running total of `weigh` first reaches `rank`; the last such id when rounding leaves the total
// short.
template <typename Eligible, typename Weigh, typename T>
__device__ int32_t TieCutoff(const float* row, int32_t cols, bool vec4, uint32_t key, T rank, Eligible eligible,
                             Weigh weigh, SampleShared& sh, T* scan_scratch) {
  const Chunk ch = MyChunk(cols);
  T mine = 0;
  int32_t last = -1;
  ForEachInChunk(row, ch, vec4, [&](int32_t i, float x) {
    if (OrderKey(x) == key && eligible(i)) {
      mine += weigh(x);
      last = i;
    }
    return false;
  });
  const T before = BlockExclusiveScan(mine, scan_scratch);
  if (threadIdx.x == 0) {
    sh.pick = 0x7fffffff;
    sh.last = -1;
  }
  __syncthreads();
  if (before + mine >= rank && before < rank) {
    T run = before;
    ForEachInChunk(row, ch, vec4, [&](int32_t i, float x) {
      if (OrderKey(x) != key || !eligible(i)) return false;
      run += weigh(x);
      if (run < rank) return false;
      atomicMin(&sh.pick, i);
      return true;
    });
  }
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if ((threadIdx.x & 31) == 0) atomicMax(&sh.last, last);
  __syncthreads();
  const int32_t cut = sh.pick != 0x7fffffff ? sh.pick : sh.last;
  __syncthreads();
  return cut;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(const float* logits, int64_t stride, int32_t rows, int32_t cols,
                                                          const SampleRequest* requests, int32_t* ids) {
  __shared__ SampleShared sh;
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  Histogram& hist = *reinterpret_cast<Histogram*>(dynamic_smem);
  const SampleRequest req = requests[blockIdx.x];
  if (req.row < 0 || req.row >= rows) {
    if (threadIdx.x == 0) ids[blockIdx.x] = -1;
    return;
  }
  const float* row = logits + static_cast<int64_t>(req.row) * stride;
  const bool vec4 = (reinterpret_cast<uintptr_t>(row) & 15) == 0;

  // The maximum (the first one: greedy's answer).
  float best = -FLT_MAX;
  int best_id = 0x7fffffff;
  ForEachStrided(row, cols, vec4, [&](int32_t c, float x) { Better(best, best_id, x, c); });
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

  // Top-k: the k-th largest key, one digit per pass.
  Cut topk;
  if (req.top_k > 0 && req.top_k < cols) {
    uint32_t prefix = 0, mask = 0;
    int32_t remaining = req.top_k;
    for (int shift = 32 - kDigitBits; shift >= 0; shift -= kDigitBits) {
      for (int b = 0; b < kBins; ++b) hist.count[b][threadIdx.x] = 0;
      ForEachStrided(row, cols, vec4, [&](int32_t, float x) {
        const uint32_t k = OrderKey(x);
        if ((k & mask) == prefix) ++hist.count[(k >> shift) & (kBins - 1)][threadIdx.x];
      });
      ReduceBins(hist, sh, false);
      int b = kBins - 1;
      for (; b > 0; --b) {
        if (sh.bin_count[b] >= remaining) break;
        remaining -= sh.bin_count[b];
      }
      prefix |= static_cast<uint32_t>(b) << shift;
      mask |= static_cast<uint32_t>(kBins - 1) << shift;
    }
    topk.key = prefix;
    // `remaining` ties at the threshold are kept, in id order.
    topk.last_tie = TieCutoff(
        row, cols, vec4, topk.key, remaining, [](int32_t) { return true; }, [](float) { return 1; }, sh, sh.isum);
  }

  // Top-p over the survivors of top-k: the same selection, by weight.
  Cut topp;
  if (req.top_p < 1.0f) {
    float kept = 0.0f;
    ForEachStrided(row, cols, vec4, [&](int32_t c, float x) {
      if (topk.Keeps(OrderKey(x), c)) kept += weight(x);
    });
    const double reach = static_cast<double>(req.top_p) * BlockSum(static_cast<double>(kept), sh.dsum);
    uint32_t prefix = 0, mask = 0;
    double above = 0.0;  // weight of the survivors ranked above the current prefix
    for (int shift = 32 - kDigitBits; shift >= 0; shift -= kDigitBits) {
      for (int b = 0; b < kBins; ++b) {
        hist.count[b][threadIdx.x] = 0;
        hist.mass[b][threadIdx.x] = 0.0f;
      }
      ForEachStrided(row, cols, vec4, [&](int32_t c, float x) {
        const uint32_t k = OrderKey(x);
        if ((k & mask) == prefix && topk.Keeps(k, c)) {
          const uint32_t bin = (k >> shift) & (kBins - 1);
          ++hist.count[bin][threadIdx.x];
          hist.mass[bin][threadIdx.x] += weight(x);
        }
      });
      ReduceBins(hist, sh, true);
      int b = kBins - 1, lowest = -1;
      for (; b >= 0; --b) {
        if (sh.bin_count[b] == 0) continue;
        lowest = b;
        if (above + sh.bin_mass[b] >= reach) break;
        above += sh.bin_mass[b];
      }
      if (b < 0) {  // rounding fell short: keep everything down to the lowest bin
        b = lowest;
        above -= sh.bin_mass[b];
      }
      prefix |= static_cast<uint32_t>(b) << shift;
      mask |= static_cast<uint32_t>(kBins - 1) << shift;
    }
    topp.key = prefix;
    topp.last_tie = TieCutoff(
        row, cols, vec4, topp.key, reach - above, [&](int32_t i) { return topk.Keeps(topp.key, i); },
        [&](float x) { return static_cast<double>(weight(x)); }, sh, sh.dsum);
  }

  // The draw: u x (kept weight), found in id order.
  const Chunk ch = MyChunk(cols);
  double mine = 0.0;
  int32_t last_kept = -1;
  ForEachInChunk(row, ch, vec4, [&](int32_t i, float x) {
    const uint32_t k = OrderKey(x);
    if (topk.Keeps(k, i) && topp.Keeps(k, i)) {
      mine += weight(x);
      last_kept = i;
    }
    return false;
  });
  const double before = BlockExclusiveScan(mine, sh.dsum);
  const double total = BlockSum(mine, sh.dsum);
  const double target = static_cast<double>(req.uniform) * total;
  if (threadIdx.x == 0) {
    sh.pick = 0x7fffffff;
    sh.last = -1;
  }
  __syncthreads();
  if (before <= target && target < before + mine) {
    double t = target - before;
    ForEachInChunk(row, ch, vec4, [&](int32_t i, float x) {
      const uint32_t k = OrderKey(x);
      if (!topk.Keeps(k, i) || !topp.Keeps(k, i)) return false;
      t -= weight(x);
      if (t >= 0.0) return false;
      atomicMin(&sh.pick, i);
      return true;
    });
  }
  for (int o = 16; o > 0; o >>= 1) last_kept = max(last_kept, __shfl_xor_sync(0xffffffffu, last_kept, o));
  if ((threadIdx.x & 31) == 0) atomicMax(&sh.last, last_kept);
  __syncthreads();
  if (threadIdx.x == 0) ids[blockIdx.x] = sh.pick != 0x7fffffff ? sh.pick : sh.last;
}

}  // namespace

cudaError_t LaunchArgmaxRows(const float* logits, int64_t stride, int64_t rows, int64_t cols, int32_t first_id,
                             int32_t* ids, float* values, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return pdl::Launch(ArgmaxKernel, static_cast<unsigned>(rows), kThreads, 0, stream, logits, stride, cols, first_id,
                     ids, values);
}

cudaError_t LaunchSampleRows(const float* logits, int64_t stride, int32_t rows, int32_t cols,
                             const SampleRequest* requests, int32_t count, int32_t* ids, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  // The per-thread histograms need more than the default 48 KiB of shared memory.
  static const cudaError_t opted_in =
      cudaFuncSetAttribute(SampleKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kHistogramBytes));
  if (opted_in != cudaSuccess) return opted_in;
  SampleKernel<<<count, kThreads, kHistogramBytes, stream>>>(logits, stride, rows, cols, requests, ids);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
