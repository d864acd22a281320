// Small memory-bound kernels: embedding gather, SwiGLU / GeGLU, scaling, row gather, bias add.
#include <algorithm>

#include "kernels/common/random_fill.h"
#include "kernels/cuda/activation_rounding.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gated_activation.cuh"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace {

__global__ void EmbeddingKernel(const int32_t* ids, const bf16* table, int32_t first_id, int64_t table_rows,
                                int64_t hidden, float* out, int64_t out_stride) {
  const int64_t t = blockIdx.x;
  const int64_t r = static_cast<int64_t>(ids[t]) - first_id;
  float* dst = out + t * out_stride;
  if (r < 0 || r >= table_rows) {  // another rank holds this id's row
    for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = 0.0f;
    return;
  }
  const bf16* row = table + r * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = __bfloat162float(row[c]);
}

// The gated activations (gated_activation.cuh). Where `round` is set (inter a multiple of 32,
// blocks of whole warps), the bf16 outputs are also rounded for the block GEMV that reads them
// next (activation_rounding.cuh).
// kVec outputs a thread: 8 (16-byte loads and stores) where the rows allow it, which a prompt's
// thousands of rows need to keep enough bytes in flight (a thread an output, with 2-byte loads,
// read at 42% of the copy rate on an H100 at 8,192 tokens); else 1.
template <typename Act, int kVec>
__global__ void GatedKernel(const bf16* gu, int64_t gu_stride, int64_t inter, bf16* out, int64_t out_stride,
                            QuantizedActivations round) {
  pdl::StartAfterPrevious();
  const int64_t r = blockIdx.y;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  const bool in = i < inter;
  if (kVec == 1 && !in) return;  // with `round`, whole warps leave together
  float o[kVec] = {};
  if (in) {
    const bf16* g = gu + r * gu_stride + i;
    const bf16* u = g + inter;
    if constexpr (kVec == 8) {
      const uint4 g8 = *reinterpret_cast<const uint4*>(g), u8 = *reinterpret_cast<const uint4*>(u);
      const bf16* gv = reinterpret_cast<const bf16*>(&g8);
      const bf16* uv = reinterpret_cast<const bf16*>(&u8);
      uint4 o8;
      bf16* ov = reinterpret_cast<bf16*>(&o8);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        ov[e] = GatedOutput<Act>(gv[e], uv[e]);
        o[e] = __bfloat162float(ov[e]);
      }
      *reinterpret_cast<uint4*>(out + r * out_stride + i) = o8;
    } else {
      const bf16 v = GatedOutput<Act>(g[0], u[0]);
      out[r * out_stride + i] = v;
      o[0] = __bfloat162float(v);
    }
  }
  // A unit of 32 is 32 / kVec lanes, all in or all out (inter a multiple of 32); every lane left
  // takes part in the shuffles.
  if (round.q != nullptr) {
    rounding::RoundUnit<kVec>(o, in, r, static_cast<int>(i / 32), static_cast<int>(inter / 32), round, true);
  }
}

__global__ void ScaleKernel(float* x, int64_t x_stride, int64_t cols, float s) {
  pdl::StartAfterPrevious();
  const int64_t r = blockIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < cols) x[r * x_stride + c] *= s;
}

__global__ void GatherRowsKernel(const char* x, int64_t x_row_bytes, const int32_t* rows, int64_t row_bytes,
                                 char* out, int64_t out_row_bytes) {
  pdl::StartAfterPrevious();
  const int64_t i = blockIdx.x;
  const char* src = x + static_cast<int64_t>(rows[i]) * x_row_bytes;
  for (int64_t b = threadIdx.x; b < row_bytes; b += blockDim.x) out[i * out_row_bytes + b] = src[b];
}

template <typename T>
__global__ void AddBiasKernel(T* out, int64_t out_stride, int64_t cols, const bf16* bias) {
  const int64_t r = blockIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  if constexpr (sizeof(T) == 4) {
    out[r * out_stride + c] += __bfloat162float(bias[c]);
  } else {
    out[r * out_stride + c] = __float2bfloat16(__bfloat162float(out[r * out_stride + c]) + __bfloat162float(bias[c]));
  }
}

__global__ void FillRandomKernel(void* dst, bool bf16_out, int64_t n, int64_t cols, uint64_t seed, float mean,
                                 float half_range, int64_t first_index, int64_t index_row_stride) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const auto src = static_cast<uint64_t>(first_index + (i / cols) * index_row_stride + i % cols);
    // Separately rounded multiply and add (no FMA contraction), exactly as the host computes it.
    const float v = __fadd_rn(mean, __fmul_rn(half_range, UniformSigned(seed, src)));
    if (bf16_out) static_cast<bf16*>(dst)[i] = __float2bfloat16(v);
    else static_cast<float*>(dst)[i] = v;
  }
}

}  // namespace

cudaError_t LaunchFillRandom(void* dst, bool bf16_out, int64_t rows, int64_t cols, uint64_t seed, float mean,
                             float half_range, int64_t first_index, int64_t index_row_stride, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 132 * 16);
  FillRandomKernel<<<blocks, 256, 0, stream>>>(dst, bf16_out, n, cols, seed, mean, half_range, first_index,
                                               index_row_stride == 0 ? cols : index_row_stride);
  return cudaGetLastError();
}

cudaError_t LaunchEmbedding(const int32_t* ids, int64_t num_tokens, const bf16* table, int32_t first_id,
                            int64_t table_rows, int64_t hidden, float* out, int64_t out_stride, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  EmbeddingKernel<<<num_tokens, 256, 0, stream>>>(ids, table, first_id, table_rows, hidden, out, out_stride);
  return cudaGetLastError();
}

namespace {
// gridDim.y holds at most 65,535 blocks: the kernels with a row of blocks per matrix row launch
// over chunks of at most that many rows (a prompt step of 64K tokens has more; one launch failed
// with an invalid configuration). At most 65,535 rows, one launch, as before.
constexpr int64_t kMaxGridRows = 65535;
template <typename Launch>
cudaError_t ForRowChunks(int64_t rows, Launch&& launch) {
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxGridRows) {
    if (const cudaError_t err = launch(r0, std::min(kMaxGridRows, rows - r0)); err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename Act>
cudaError_t LaunchGated(const bf16* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, bf16* out,
                        int64_t out_stride, cudaStream_t stream, const QuantizedActivations* round, bool* rounded) {
  if (rounded != nullptr) *rounded = false;
  if (rows == 0) return cudaSuccess;
  constexpr int kThreads = 128;  // whole warps
  // Rounding indexes the rows from the launch's first: one launch only (decode-sized steps).
  const bool rounds = round != nullptr && inter % 32 == 0 && rows <= kMaxGridRows;
  const bool vec = inter % 8 == 0 && gu_stride % 8 == 0 && out_stride % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int per_thread = vec ? 8 : 1;
  const cudaError_t err = ForRowChunks(rows, [&](int64_t r0, int64_t n) {
    const dim3 grid((inter / per_thread + kThreads - 1) / kThreads, static_cast<unsigned>(n));
    return pdl::Launch(vec ? GatedKernel<Act, 8> : GatedKernel<Act, 1>, grid, kThreads, 0, stream,
                       gate_up + r0 * gu_stride, gu_stride, inter, out + r0 * out_stride, out_stride,
                       rounds ? *round : QuantizedActivations{});
  });
  if (rounded != nullptr) *rounded = rounds && err == cudaSuccess;
  return err;
}
}  // namespace

cudaError_t LaunchSwiGlu(const bf16* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, bf16* out,
                         int64_t out_stride, cudaStream_t stream, const QuantizedActivations* round, bool* rounded) {
  return LaunchGated<Silu>(gate_up, gu_stride, rows, inter, out, out_stride, stream, round, rounded);
}

cudaError_t LaunchGeluGlu(const bf16* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, bf16* out,
                          int64_t out_stride, cudaStream_t stream, const QuantizedActivations* round, bool* rounded) {
  return LaunchGated<GeluTanh>(gate_up, gu_stride, rows, inter, out, out_stride, stream, round, rounded);
}

cudaError_t LaunchScale(float* x, int64_t x_stride, int64_t rows, int64_t cols, float s, cudaStream_t stream) {
  return ForRowChunks(rows, [&](int64_t r0, int64_t n) {
    return pdl::Launch(ScaleKernel, dim3((cols + 255) / 256, static_cast<unsigned>(n)), 256, 0, stream,
                       x + r0 * x_stride, x_stride, cols, s);
  });
}

cudaError_t LaunchGatherRows(const void* x, int64_t x_stride, const int32_t* rows, int64_t n, int64_t cols,
                             int32_t elem_bytes, void* out, int64_t out_stride, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return pdl::Launch(GatherRowsKernel, static_cast<unsigned>(n), 256, 0, stream, static_cast<const char*>(x),
                     x_stride * elem_bytes, rows, cols * elem_bytes, static_cast<char*>(out), out_stride * elem_bytes);
}

cudaError_t LaunchAddBias(bf16* out, int64_t out_stride, int64_t rows, int64_t cols, const bf16* bias,
                          cudaStream_t stream) {
  return ForRowChunks(rows, [&](int64_t r0, int64_t n) {
    AddBiasKernel<bf16><<<dim3((cols + 255) / 256, static_cast<unsigned>(n)), 256, 0, stream>>>(out + r0 * out_stride,
                                                                                                out_stride, cols, bias);
    return cudaGetLastError();
  });
}

cudaError_t LaunchAddBiasF32(float* out, int64_t out_stride, int64_t rows, int64_t cols, const bf16* bias,
                             cudaStream_t stream) {
  return ForRowChunks(rows, [&](int64_t r0, int64_t n) {
    AddBiasKernel<float><<<dim3((cols + 255) / 256, static_cast<unsigned>(n)), 256, 0, stream>>>(
        out + r0 * out_stride, out_stride, cols, bias);
    return cudaGetLastError();
  });
}

}  // namespace kvs::cuda

namespace kvs::cuda {
namespace {

// A warp per region (grid-stride over the table), 16-byte words, loads and stores coalesced.
// Regions in pinned host memory are reached over the bus, where a load is a round trip of a
// microsecond or more: each lane has all its loads of a round (8 words, 4 KiB per warp) in flight
// before it stores any, and every resident warp has its own region going, so a few blocks keep
// enough bytes in flight to fill the host link. That matters beside the forward pass: a copy
// kernel spread over every SM delays the forward pass's one-wave kernels on each SM it touches.
__global__ void CopyRegionsKernel(const CopyRegion* table, int64_t count) {
  constexpr int kWordsInFlight = 8;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t ri = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; ri < count; ri += warps) {
    const CopyRegion r = table[ri];
    const auto* __restrict__ src = static_cast<const uint4*>(r.src);
    auto* __restrict__ dst = static_cast<uint4*>(r.dst);
    const int64_t words = static_cast<int64_t>(r.bytes / 16);
    for (int64_t base = lane; base < words; base += kWordsInFlight * 32) {
      uint4 w[kWordsInFlight];
#pragma unroll
      for (int u = 0; u < kWordsInFlight; ++u) {
        const int64_t i = base + u * 32;
        if (i < words) w[u] = src[i];
      }
#pragma unroll
      for (int u = 0; u < kWordsInFlight; ++u) {
        const int64_t i = base + u * 32;
        if (i < words) dst[i] = w[u];
      }
    }
  }
}

}  // namespace

cudaError_t LaunchCopyRegions(const CopyRegion* table, int64_t count, cudaStream_t stream, int max_blocks) {
  if (count == 0) return cudaSuccess;
  // Capped launches (moves beside the forward pass) take whole SMs' worth of warps on few SMs;
  // uncapped ones a block of 8 warps per 8 regions, spread over the device.
  const int threads = max_blocks > 0 ? 1024 : 256;
  const int64_t blocks = (count + threads / 32 - 1) / (threads / 32);
  CopyRegionsKernel<<<max_blocks > 0 ? std::min<int64_t>(blocks, max_blocks) : blocks, threads, 0, stream>>>(table, count);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
