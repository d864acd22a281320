// The decode GEMV for bf16 weights (1 to kBf16GemvMaxTokens tokens): bf16 rows times bf16
// activations, products and sums in f32. cuBLAS did this before (docs/performance.md, "Decode
// GEMMs"); its GEMVs read a batch-1 step's weights at ~85% of copy on an H100 and ~76% on an H200,
// and cannot start before the kernel ahead of them ends. This one is the GGML and F8 GEMVs' shape
// (gemv_common.cuh): a resident grid looping over row groups, the first group's weights prefetched
// into L2 before the wait for the previous kernel (pdl.cuh), several 16-byte pieces in flight per
// lane, the row's sum reduced by FinishRow.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/kernel_choice.h"

namespace kvs::cuda {
namespace {

using gemv::kWarp;
constexpr int kGemvWarps = gemv::kWarps;
constexpr int kPieceElems = 8;  // bf16 a 16-byte piece

// A weight piece, read once: kept out of L1 (ld.global.nc.L1::no_allocate), which then holds the
// activations that every row of the block re-reads.
__device__ __forceinline__ uint4 LoadStreamed(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ float DotPiece(const uint4& w, const uint4& x) {
  const uint32_t ww[4] = {w.x, w.y, w.z, w.w}, xw[4] = {x.x, x.y, x.z, x.w};
  float dot = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 wf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ww[j]));
    const float2 xf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xw[j]));
    dot = fmaf(wf.x, xf.x, dot);
    dot = fmaf(wf.y, xf.y, dot);
  }
  return dot;
}

// out[t, row] = x[t] . w[row]. kWarpsPerRow warps share a row (4 where the matrix has few rows, as
// the other GEMVs). A warp takes 32 pieces (256 weights) of its row at a time, lane l piece l, and
// kInFlight such chunks are loaded before any is used: the loop waits on loads, not on issue.
template <int kMaxTokens, int kWarpsPerRow>
__global__ void __launch_bounds__(kGemvWarps* kWarp, 8)
    Bf16GemvKernel(const bf16* __restrict__ w, int64_t k, int n, const bf16* __restrict__ x, int64_t x_stride,
                   int tokens, void* out, int64_t out_stride, bool f32_out) {
  constexpr int kRowsPerBlock = kGemvWarps / kWarpsPerRow;
  constexpr int kInFlight = kMaxTokens <= 2 ? 4 : 2;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int part = warp % kWarpsPerRow;
  gemv::PrefetchFirstRows<kRowsPerBlock, kWarpsPerRow>(reinterpret_cast<const uint8_t*>(w), 2 * k, n, lane, warp, part);
  pdl::WaitForPrevious();
  pdl::AllowNext();
  const int pieces = static_cast<int>(k / kPieceElems);
  const int chunks = (pieces + kWarp - 1) / kWarp;
  for (int group = blockIdx.x; group * kRowsPerBlock < n; group += gridDim.x) {
    const int row = group * kRowsPerBlock + warp / kWarpsPerRow;
    const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(min(row, n - 1)) * k);
    float acc[kMaxTokens];
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) acc[t] = 0.0f;
    for (int c0 = part; c0 < chunks; c0 += kWarpsPerRow * kInFlight) {
      uint4 wv[kInFlight];
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int p = (c0 + i * kWarpsPerRow) * kWarp + lane;
        wv[i] = p < pieces ? LoadStreamed(wr + p) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int p = (c0 + i * kWarpsPerRow) * kWarp + lane;
        if (p >= pieces) continue;
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
          if (t < tokens) acc[t] += DotPiece(wv[i], __ldg(reinterpret_cast<const uint4*>(x + t * x_stride) + p));
        }
      }
    }
    gemv::FinishRow<kMaxTokens, kWarpsPerRow>(acc, lane, warp, part, row, n, tokens, out, out_stride, f32_out);
  }
}

template <int kWarpsPerRow>
cudaError_t LaunchGemv(const bf16* w, int64_t k, int n, const bf16* x, int64_t x_stride, int tokens, void* out,
                       int64_t out_stride, bool f32_out, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kGemvWarps / kWarpsPerRow;
  const int groups = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  auto launch = [&](auto kernel) {
    const int grid = std::min(groups, gemv::ResidentBlocks(kernel, kGemvWarps * kWarp));
    return pdl::Launch(kernel, grid, kGemvWarps * kWarp, 0, stream, w, k, n, x, x_stride, tokens, out, out_stride,
                       f32_out);
  };
  if (tokens == 1) return launch(Bf16GemvKernel<1, kWarpsPerRow>);
  if (tokens == 2) return launch(Bf16GemvKernel<2, kWarpsPerRow>);
  if (tokens <= 4) return launch(Bf16GemvKernel<4, kWarpsPerRow>);
  return launch(Bf16GemvKernel<8, kWarpsPerRow>);
}

KernelChoice g_cublas("KVS_BF16_GEMV", "cublas");  // alternative: cuBLAS at every token count

}  // namespace

static_assert(kBf16GemvMaxTokens <= 8, "the widest kernel keeps 8 sums a lane");

void SetBf16GemvOn(bool on) { g_cublas.Set(!on); }

namespace {
// The shapes the kernel takes: whole 16-byte pieces, aligned, with counts that fit its ints.
bool Fits(const void* w, int64_t n, int64_t k, const void* x, int64_t x_stride, int64_t tokens) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return tokens >= 1 && tokens <= kBf16GemvMaxTokens && k % kPieceElems == 0 && k / kPieceElems <= (int64_t{1} << 30) &&
         n <= (int64_t{1} << 30) && x_stride % kPieceElems == 0 && aligned(w) && aligned(x);
}
}  // namespace

bool Bf16GemvTakes(const void* w, int64_t n, int64_t k, const void* x, int64_t x_stride, int64_t tokens) {
  return !g_cublas.Alternative() && Fits(w, n, k, x, x_stride, tokens);
}

cudaError_t LaunchBf16Gemv(const bf16* w, int64_t n, int64_t k, const bf16* x, int64_t x_stride, int64_t tokens,
                           void* out, int64_t out_stride, bool f32_out, cudaStream_t stream) {
  if (!Fits(w, n, k, x, x_stride, tokens)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;  // k == 0 runs: every output is an empty sum, 0
  const int rows = static_cast<int>(n), t = static_cast<int>(tokens);
  if (n <= gemv::kNarrowRows) return LaunchGemv<4>(w, k, rows, x, x_stride, t, out, out_stride, f32_out, stream);
  return LaunchGemv<1>(w, k, rows, x, x_stride, t, out, out_stride, f32_out, stream);
}

}  // namespace kvs::cuda
