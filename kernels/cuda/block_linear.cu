// Weights kept in their GGML blocks on the GPU: the decode GEMV and the embedding lookup.
//
// Decode (1 to kBlockGemvMaxTokens tokens) reads each weight once from its blocks, so a step reads
// the file's bytes, not bf16's. Rows are kept split (codes, then scales: LaunchSplitRows, once at
// load), which lets a warp's loads be contiguous. As llama.cpp's GPU and CPU builds and kvshard's CPU backend do,
// the activations are first rounded to int8 per 32 (scale max|x| / 127, to nearest), and every
// 32 weights are dotted with them by __dp4a in int32, then scaled in float: the rounding of the
// activations is the only difference from the float reference (tests/kernels/cuda/
// block_linear_test.cc bounds it element by element).
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "kernels/cuda/activation_rounding.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/ggml_unit.cuh"
#include "kernels/cuda/kernel_choice.h"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace {

using gemv::kWarp;

using rounding::CodeOffset;

// One warp per (token, 32 activations): lane i rounds activation i.
__global__ void QuantizeActivationsKernel(const bf16* __restrict__ x, int64_t x_stride, int64_t tokens, int64_t units,
                                          QuantizedActivations a, bool gemv_order) {
  pdl::StartAfterPrevious();
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (warp >= tokens * units) return;  // whole warps leave together
  const int64_t t = warp / units, u = warp % units;
  const float v[1] = {__bfloat162float(x[t * x_stride + 32 * u + lane])};
  rounding::RoundUnit<1>(v, true, t, static_cast<int>(u), static_cast<int>(units), a, gemv_order);
}

using gemv::kNarrowRows;
using gemv::ResidentBlocks;
constexpr int kGemvWarps = gemv::kWarps;

// Token t's share of a row from one unit of it (r, read by ggml::ReadRowUnit): the unit's codes
// against the activations' int8 codes (two 16-byte pieces in the GEMV's order), times the scales.
template <GgmlType T>
__device__ __forceinline__ float UnitDot(const ggml::Unit& r, const QuantizedActivations& a, int t, int units, int u,
                                         int piece0, int piece1) {
  const int4 x0 = __ldg(reinterpret_cast<const int4*>(a.q + (t * units * 32 + piece0)));
  const int4 x1 = __ldg(reinterpret_cast<const int4*>(a.q + (t * units * 32 + piece1)));
  int s0 = __dp4a(static_cast<int>(r.q[0]), x0.x, 0);
  s0 = __dp4a(static_cast<int>(r.q[1]), x0.y, s0);
  s0 = __dp4a(static_cast<int>(r.q[2]), x0.z, s0);
  s0 = __dp4a(static_cast<int>(r.q[3]), x0.w, s0);
  int s1 = __dp4a(static_cast<int>(r.q[4]), x1.x, 0);
  s1 = __dp4a(static_cast<int>(r.q[5]), x1.y, s1);
  s1 = __dp4a(static_cast<int>(r.q[6]), x1.z, s1);
  s1 = __dp4a(static_cast<int>(r.q[7]), x1.w, s1);
  const float d = __ldg(a.d + static_cast<int64_t>(t) * units + u);
  float v = d * (r.scale[0] * static_cast<float>(s0) + r.scale[1] * static_cast<float>(s1));
  if constexpr (ggml::Traits<T>::kHasMin) {
    // sum_e min * x_e = min * d * sum q, per 16.
    const float2 xs = __ldg(reinterpret_cast<const float2*>(a.sum16) + static_cast<int64_t>(t) * units + u);
    v += r.min[0] * xs.x + r.min[1] * xs.y;
  }
  return v;
}

// out[t, row] = x[t] . w[row]: kWarpsPerRow warps share a row (1 where the matrix has rows enough to
// fill the GPU, 4 for the narrow ones, whose single warps would each wait through a long row alone),
// each lane taking every (32 kWarpsPerRow)-th unit of it; the activations in the GEMV's order
// (CodeOffset). kWide: split rows on 16 bytes (ggml::RowsWide), whose codes load in 16-byte pieces.
//
// The grid is what fits on the GPU at once and loops over the rows (ResidentBlocks): a grid of a
// block per row group ran 2.26 waves on the H200 and idled SMs in the last one. At 1-2 tokens
// 12 blocks of 4 warps share an SM (the loop waits on loads, so warps in flight matter); a cap of
// 32 registers for all 16 made the K-quant kernels spill.
template <GgmlType T, int kMaxTokens, int kWarpsPerRow, bool kWide>
__global__ void __launch_bounds__(kGemvWarps* kWarp, kMaxTokens <= 2 ? 12 : 8)
    BlockGemvKernel(const uint8_t* __restrict__ w, int64_t row_bytes, int n, int units, QuantizedActivations a,
                    int tokens, void* out, int64_t out_stride, bool f32_out) {
  constexpr int kRowsPerBlock = kGemvWarps / kWarpsPerRow;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int part = warp % kWarpsPerRow;
  gemv::PrefetchFirstRows<kRowsPerBlock, kWarpsPerRow>(w, row_bytes, n, lane, warp, part);
  pdl::StartAfterPrevious();
  for (int group = blockIdx.x; group * kRowsPerBlock < n; group += gridDim.x) {
    const int row = group * kRowsPerBlock + warp / kWarpsPerRow;
    const uint8_t* wr = w + static_cast<int64_t>(min(row, n - 1)) * row_bytes;
    float acc[kMaxTokens];
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) acc[t] = 0.0f;
    // Several units in flight per lane: the loop is latency-bound, not issue-bound, at few tokens.
#pragma unroll(kMaxTokens <= 2 ? 4 : 2)
    for (int u = lane + kWarp * part; u < units; u += kWarp * kWarpsPerRow) {
      const ggml::Unit r = ggml::ReadRowUnit<T, kWide>(wr, units, u);
      // This unit's two 16-byte pieces of codes in the GEMV's order.
      const int piece0 = CodeOffset(u, 0, units, true), piece1 = CodeOffset(u, 16, units, true);
#pragma unroll
      for (int t = 0; t < kMaxTokens; ++t) {
        if (t < tokens) acc[t] += UnitDot<T>(r, a, t, units, u, piece0, piece1);
      }
    }
    gemv::FinishRow<kMaxTokens, kWarpsPerRow>(acc, lane, warp, part, row, n, tokens, out, out_stride, f32_out);
  }
}

// BlockGemvKernel for one token over narrow rows (four warps a row) whose row groups outnumber the
// grid: a block walks kGroups of its groups (group, group + grid, ...) at once, their units' loads
// in flight together. The O projection of Llama-3-8B (4,096 rows of 128 units, a unit a lane)
// takes 2.6 waves of one load and one block reduction each in BlockGemvKernel, 64% of the copy
// rate in the step's timeline. Each row's sum is the same sum in the same order (UnitDot), so the
// bits are BlockGemvKernel's (tested). kGroupsInFlightFit: the types that hold three groups' units
// in the 40 registers of 12 blocks an SM without spilling. The default since 2026-12-07 (a Q4_0
// step 0.5-1.0% shorter, the O GEMV 4.4 µs a layer against 4.8: docs/performance.md).
constexpr int kGemvGroupsInFlight = 3;
KernelChoice g_one_group_at_a_time("KVS_GEMV_GROUPS", "off");  // alternative: BlockGemvKernel, one group at a time
std::atomic<int64_t> g_groups_in_flight_launches{0};
template <GgmlType T>
constexpr bool kGroupsInFlightFit = T == GgmlType::kQ4_0 || T == GgmlType::kQ4_1 || T == GgmlType::kQ5_0 ||
                                    T == GgmlType::kQ5_1;  // ptxas, CUDA 13: Q4_K and IQ4_* spill 32-96 bytes
template <GgmlType T, bool kWide, int kGroups>
__global__ void __launch_bounds__(kGemvWarps* kWarp, 12)
    BlockGemvGroupsKernel(const uint8_t* __restrict__ w, int64_t row_bytes, int n, int units, QuantizedActivations a,
                          void* out, int64_t out_stride, bool f32_out) {
  constexpr int kWarpsPerRow = 4, kRowsPerBlock = kGemvWarps / kWarpsPerRow;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int part = warp % kWarpsPerRow;
  gemv::PrefetchFirstRows<kRowsPerBlock, kWarpsPerRow>(w, row_bytes, n, lane, warp, part);
  pdl::StartAfterPrevious();
  for (int first = blockIdx.x; first * kRowsPerBlock < n; first += kGroups * gridDim.x) {
    int row[kGroups];
    const uint8_t* wr[kGroups];
    float acc[kGroups][1];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      row[g] = (first + g * static_cast<int>(gridDim.x)) * kRowsPerBlock + warp / kWarpsPerRow;
      wr[g] = w + static_cast<int64_t>(min(row[g], n - 1)) * row_bytes;
      acc[g][0] = 0.0f;
    }
    for (int u = lane + kWarp * part; u < units; u += kWarp * kWarpsPerRow) {
      ggml::Unit r[kGroups];
#pragma unroll
      for (int g = 0; g < kGroups; ++g) r[g] = ggml::ReadRowUnit<T, kWide>(wr[g], units, u);
      const int piece0 = CodeOffset(u, 0, units, true), piece1 = CodeOffset(u, 16, units, true);
#pragma unroll
      for (int g = 0; g < kGroups; ++g) acc[g][0] += UnitDot<T>(r[g], a, 0, units, u, piece0, piece1);
    }
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      if ((first + g * static_cast<int>(gridDim.x)) * kRowsPerBlock >= n) break;  // the same for the whole block
      gemv::FinishRow<1, kWarpsPerRow>(acc[g], lane, warp, part, row[g], n, 1, out, out_stride, f32_out);
    }
  }
}

// out[t] = table row ids[t] - first_id, decoded as the CPU decoder decodes it (zeros for an id
// another rank holds). A thread per unit of 32 columns.
template <GgmlType T>
__global__ void EmbeddingBlocksKernel(const int32_t* __restrict__ ids, int64_t tokens,
                                      const uint8_t* __restrict__ table, int64_t row_bytes, int32_t first_id,
                                      int64_t table_rows, int64_t units, float* __restrict__ out, int64_t out_stride) {
  using Tr = ggml::Traits<T>;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= tokens * units) return;
  const int64_t t = i / units, u = i % units;
  const int64_t row = static_cast<int64_t>(ids[t]) - first_id;
  float* dst = out + t * out_stride + 32 * u;
  if (row < 0 || row >= table_rows) {
    for (int e = 0; e < 32; ++e) dst[e] = 0.0f;
    return;
  }
  const ggml::Unit r = ggml::ReadRowUnit<T>(table + row * row_bytes, static_cast<int>(units), static_cast<int>(u));
#pragma unroll
  for (int w = 0; w < 8; ++w)
#pragma unroll
    for (int k = 0; k < 4; ++k) dst[4 * w + k] = ggml::Weight<Tr::kHasMin>(r, w, k);
}

// Stored blocks -> split rows (ggml_unit.cuh's Parts), in place: a block of threads per row, the
// row staged whole in shared memory first (so no write lands on bytes still to be read). A stored
// block's payload is the run [payload_at, payload_at + payload); its other bytes, in order, are its
// header. Every part is a whole number of 2-byte halves.
__global__ void SplitRowsKernel(uint8_t* __restrict__ w, int64_t row_bytes, int blocks, int header, int payload_at,
                                int payload) {
  extern __shared__ uint16_t staged_halves[];  // row_bytes / 2
  uint16_t* row = reinterpret_cast<uint16_t*>(w + blockIdx.x * row_bytes);
  const int halves = static_cast<int>(row_bytes / 2), block = (header + payload) / 2;
  const int p0 = payload_at / 2, p = payload / 2, h = header / 2;
  for (int i = threadIdx.x; i < halves; i += blockDim.x) staged_halves[i] = row[i];
  __syncthreads();
  for (int i = threadIdx.x; i < halves; i += blockDim.x) {
    const int b = i / block, j = i % block;
    const bool in_payload = j >= p0 && j < p0 + p;
    row[in_payload ? p * b + (j - p0) : p * blocks + h * b + (j < p0 ? j : j - p)] = staged_halves[i];
  }
}

// Split rows of a kRelaid type re-laid per unit (ggml_unit.cuh's RelayUnits), a thread per block.
template <GgmlType T>
__global__ void RelayUnitsKernel(uint8_t* __restrict__ w, int64_t row_bytes, int64_t rows, int blocks) {
  using Pt = ggml::Parts<T>;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * blocks) return;
  uint8_t* row = w + (i / blocks) * row_bytes;
  const int b = static_cast<int>(i % blocks);
  ggml::RelayUnits<T>(row + static_cast<int64_t>(Pt::kPayload) * blocks + Pt::kHeader * b,
                      row + static_cast<int64_t>(Pt::kPayload) * b);
}

template <GgmlType T>
struct SplitRowsLaunch {
  static cudaError_t Run(uint8_t* w, int64_t row_bytes, int64_t rows, int64_t blocks, cudaStream_t stream) {
    using Pt = ggml::Parts<T>;
    if constexpr (!Pt::kSplit) {
      return cudaSuccess;  // kept as stored
    } else {
      static_assert(Pt::kHeader + Pt::kPayload == ggml::Traits<T>::kBlockBytes, "a block is its header and payload");
      if (row_bytes != blocks * ggml::Traits<T>::kBlockBytes) return cudaErrorInvalidValue;
      const cudaError_t split =
          LaunchSplitRowParts(w, row_bytes, rows, blocks, Pt::kHeader, Pt::kPayloadAt, Pt::kPayload, stream);
      if constexpr (!ggml::kRelaid<T>) {
        return split;
      } else {
        if (split != cudaSuccess) return split;
        constexpr int kThreads = 128;
        const int64_t threads = rows * blocks;
        RelayUnitsKernel<T><<<(threads + kThreads - 1) / kThreads, kThreads, 0, stream>>>(w, row_bytes, rows,
                                                                                          static_cast<int>(blocks));
        return cudaGetLastError();
      }
    }
  }
};

template <GgmlType T>
struct GemvLaunch {
  static cudaError_t Run(const uint8_t* w, int64_t row_bytes, int n, int units, const QuantizedActivations& a,
                         int tokens, void* out, int64_t out_stride, bool f32_out, cudaStream_t stream) {
    if (!ggml::RowsAligned<T>(w, row_bytes)) return cudaErrorInvalidValue;
    if (ggml::RowsWide<T>(w, row_bytes, units)) {
      if constexpr (ggml::Parts<T>::kSplit) {  // the other types have no wide kernels
        if (n <= kNarrowRows)
          return Launch<4, true>(w, row_bytes, n, units, a, tokens, out, out_stride, f32_out, stream);
        return Launch<1, true>(w, row_bytes, n, units, a, tokens, out, out_stride, f32_out, stream);
      }
    }
    if (n <= kNarrowRows) return Launch<4, false>(w, row_bytes, n, units, a, tokens, out, out_stride, f32_out, stream);
    return Launch<1, false>(w, row_bytes, n, units, a, tokens, out, out_stride, f32_out, stream);
  }
  template <int kWarpsPerRow, bool kWide>
  static cudaError_t Launch(const uint8_t* w, int64_t row_bytes, int n, int units, const QuantizedActivations& a,
                            int tokens, void* out, int64_t out_stride, bool f32_out, cudaStream_t stream) {
    constexpr int kRowsPerBlock = kGemvWarps / kWarpsPerRow;
    const int groups = (n + kRowsPerBlock - 1) / kRowsPerBlock;
    auto launch = [&](auto kernel) {
      const int blocks = std::min(groups, ResidentBlocks(kernel, kGemvWarps * kWarp));
      return pdl::Launch(kernel, blocks, kGemvWarps * kWarp, 0, stream, w, row_bytes, n, units, a, tokens, out,
                         out_stride, f32_out);
    };
    if constexpr (kWarpsPerRow == 4 && kGroupsInFlightFit<T>) {
      // One token over narrow rows with more row groups than the grid holds, whose lanes hold one or
      // two units (longer rows keep four units in flight a lane as they are: the down projection).
      constexpr auto kGrouped = BlockGemvGroupsKernel<T, kWide, kGemvGroupsInFlight>;
      if (tokens == 1 && units <= 2 * kWarp * kWarpsPerRow && !g_one_group_at_a_time.Alternative()) {
        const int blocks = ResidentBlocks(kGrouped, kGemvWarps * kWarp);
        if (groups > blocks) {
          g_groups_in_flight_launches.fetch_add(1);
          return pdl::Launch(kGrouped, blocks, kGemvWarps * kWarp, 0, stream, w, row_bytes, n, units, a, out,
                             out_stride, f32_out);
        }
      }
    }
    // Token counts round up to 1, 2, 4 or 8 accumulators; the kernel skips the ones past `tokens`.
    if (tokens == 1) return launch(BlockGemvKernel<T, 1, kWarpsPerRow, kWide>);
    if (tokens == 2) return launch(BlockGemvKernel<T, 2, kWarpsPerRow, kWide>);
    if (tokens <= 4) return launch(BlockGemvKernel<T, 4, kWarpsPerRow, kWide>);
    return launch(BlockGemvKernel<T, kBlockGemvMaxTokens, kWarpsPerRow, kWide>);
  }
};

template <GgmlType T>
struct EmbeddingLaunch {
  static cudaError_t Run(const int32_t* ids, int64_t tokens, const uint8_t* table, int64_t row_bytes, int32_t first_id,
                         int64_t table_rows, int64_t units, float* out, int64_t out_stride, cudaStream_t stream) {
    if (!ggml::RowsAligned<T>(table, row_bytes)) return cudaErrorInvalidValue;
    constexpr int kThreads = 128;
    const int64_t threads = tokens * units;
    EmbeddingBlocksKernel<T><<<(threads + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        ids, tokens, table, row_bytes, first_id, table_rows, units, out, out_stride);
    return cudaGetLastError();
  }
};

}  // namespace

namespace {
std::atomic<int64_t> g_roundings{0};
}  // namespace

int64_t ActivationRoundingsLaunched() { return g_roundings.load(); }
void SetGemvGroupsInFlight(bool on) { g_one_group_at_a_time.Set(!on); }
void ResetGemvGroupsInFlight() { g_one_group_at_a_time.Reset(); }
int64_t GemvGroupsInFlightLaunched() { return g_groups_in_flight_launches.load(); }

cudaError_t LaunchQuantizeActivations(const bf16* x, int64_t x_stride, int64_t tokens, int64_t k,
                                      QuantizedActivations a, bool gemv_order, cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  if (k % 32 != 0) return cudaErrorInvalidValue;
  g_roundings.fetch_add(1);
  constexpr int kThreads = 256;
  const int64_t warps = tokens * (k / 32);
  return pdl::Launch(QuantizeActivationsKernel, static_cast<unsigned>((warps * kWarp + kThreads - 1) / kThreads),
                     kThreads, 0, stream, x, x_stride, tokens, k / 32, a, gemv_order);
}

cudaError_t LaunchBlockGemv(GgmlType type, const void* w, int64_t row_bytes, int64_t n, int64_t k,
                            QuantizedActivations a, int64_t tokens, void* out, int64_t out_stride, bool f32_out,
                            cudaStream_t stream) {
  if (tokens <= 0 || tokens > kBlockGemvMaxTokens || k % 32 != 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  return ggml::DispatchBlockType<GemvLaunch>(type, static_cast<const uint8_t*>(w), row_bytes, static_cast<int>(n),
                                             static_cast<int>(k / 32), a, static_cast<int>(tokens), out, out_stride,
                                             f32_out, stream);
}

cudaError_t LaunchSplitRowParts(void* w, int64_t row_bytes, int64_t rows, int64_t blocks, int header, int payload_at,
                                int payload, cudaStream_t stream) {
  if (reinterpret_cast<uintptr_t>(w) % 2 != 0 || row_bytes > kSplitRowsMaxRowBytes || header % 2 != 0 ||
      payload_at % 2 != 0 || payload % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  if (row_bytes > 48 * 1024) {  // beyond the default: asked for (refused where the GPU has less)
    const cudaError_t attr =
        cudaFuncSetAttribute(SplitRowsKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(row_bytes));
    if (attr != cudaSuccess) return attr;
  }
  constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxGridX) {
    const int64_t n = std::min<int64_t>(kMaxGridX, rows - r0);
    SplitRowsKernel<<<static_cast<unsigned>(n), 256, row_bytes, stream>>>(
        static_cast<uint8_t*>(w) + r0 * row_bytes, row_bytes, static_cast<int>(blocks), header, payload_at, payload);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t LaunchSplitRows(GgmlType type, void* w, int64_t rows, int64_t k, cudaStream_t stream) {
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  if (!info.has_value() || k % 32 != 0 || k % info->block_elems != 0) return cudaErrorInvalidValue;
  if (rows == 0 || k == 0) return cudaSuccess;
  const int64_t blocks = k / info->block_elems;
  return ggml::DispatchBlockType<SplitRowsLaunch>(type, static_cast<uint8_t*>(w), blocks * info->block_bytes, rows,
                                                  blocks, stream);
}

namespace {
template <GgmlType T>
struct SplitsRowsOf {
  static cudaError_t Run(bool* out) {
    *out = ggml::Parts<T>::kSplit;
    return cudaSuccess;
  }
};
}  // namespace

bool SplitsRows(GgmlType type) {
  bool split = false;
  return ggml::DispatchBlockType<SplitsRowsOf>(type, &split) == cudaSuccess && split;
}

cudaError_t LaunchEmbeddingBlocks(GgmlType type, const int32_t* ids, int64_t tokens, const void* table,
                                  int64_t row_bytes, int32_t first_id, int64_t table_rows, int64_t hidden, float* out,
                                  int64_t out_stride, cudaStream_t stream) {
  if (type == GgmlType::kF8_E4M3) {
    return LaunchF8Embedding(ids, tokens, table, row_bytes, first_id, table_rows, hidden, out, out_stride, stream);
  }
  if (hidden % 32 != 0) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  return ggml::DispatchBlockType<EmbeddingLaunch>(type, ids, tokens, static_cast<const uint8_t*>(table), row_bytes,
                                                  first_id, table_rows, hidden / 32, out, out_stride, stream);
}

}  // namespace kvs::cuda
