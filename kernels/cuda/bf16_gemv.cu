// The decode GEMV for bf16 weights (kBf16GemvMaxTokens, one token): bf16 rows times bf16
// activations, products and sums in f32. cuBLAS did this before (docs/performance.md, "Decode
// GEMMs"); its GEMVs read a batch-1 step's weights at ~85% of copy on an H100 and ~76% on an H200,
// and cannot start before the kernel ahead of them ends. This one is the GGML and F8 GEMVs' shape
// (gemv_common.cuh): a resident grid looping over row groups, the first group's weights prefetched
// into L2 before the wait for the previous kernel (pdl.cuh), several 16-byte pieces in flight per
// lane, the row's sum reduced by FinishRow.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"
#include "kernels/cuda/kernel_choice.h"

namespace kvs::cuda {
namespace {

using gemv::kWarp;
constexpr int kGemvWarps = gemv::kWarps;
constexpr int kPieceElems = 8;  // bf16 a 16-byte piece

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

// out[t, row] = x[t] . w[row]. kWarpsPerRow warps share a row, in blocks of kBlockWarps warps
// (RowSplit). A warp takes 32 pieces (256 weights) of its row at a time, lane l piece l, and
// kInFlight such chunks are loaded before any is used: the loop waits on loads, not on issue.
// One token: at 2 tokens it tied cuBLAS per matrix and lost by 2% a step, at 4 and 8 the
// activations' re-reads from L1 made it 1.4x and 2.5x slower (docs/performance.md, "A bf16 decode
// GEMV"). The token loop stays for that measurement's sake.
//
// Gated (Act not void, one token): w is an MLP's gate_up matrix [2n, k], and out[row] =
// act(x . w[row]) * (x . w[n + row]) (FinishGatedRow): the row's warps walk the gate row's chunks
// and then the up row's as one row of twice the chunks, so the elementwise kernel, and the
// gate_up matrix's write and read, drop out of a batch-1 step.
template <int kMaxTokens, int kWarpsPerRow, int kBlockWarps, typename Act = void>
__global__ void __launch_bounds__(kBlockWarps* kWarp, kBlockWarps == 4 ? 8 : 2)
    Bf16GemvKernel(const bf16* __restrict__ w, int64_t k, int n, const bf16* __restrict__ x, int64_t x_stride,
                   int tokens, void* out, int64_t out_stride, bool f32_out) {
  constexpr bool kGated = !std::is_void_v<Act>;
  static_assert(!kGated || kMaxTokens == 1, "the gated GEMV is for one token");
  constexpr int kSums = kGated ? 2 : kMaxTokens;  // gated: the gate row's dot, then the up row's
  constexpr int kRowsPerBlock = kBlockWarps / kWarpsPerRow;
  constexpr int kInFlight = 4;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int part = warp % kWarpsPerRow;
  const uint8_t* w_bytes = reinterpret_cast<const uint8_t*>(w);
  gemv::PrefetchFirstRows<kRowsPerBlock, kWarpsPerRow>(w_bytes, 2 * k, n, lane, warp, part);
  if constexpr (kGated)
    gemv::PrefetchFirstRows<kRowsPerBlock, kWarpsPerRow>(w_bytes + 2 * k * n, 2 * k, n, lane, warp, part);
  pdl::StartAfterPrevious();
  const int pieces = static_cast<int>(k / kPieceElems);
  const int chunks = (pieces + kWarp - 1) / kWarp;
  const int row_chunks = kGated ? 2 * chunks : chunks;
  for (int group = blockIdx.x; group * kRowsPerBlock < n; group += gridDim.x) {
    const int row = group * kRowsPerBlock + warp / kWarpsPerRow;
    const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(min(row, n - 1)) * k);
    const uint4* up_row = wr + static_cast<int64_t>(n) * pieces;  // gated: the up row
    float acc[kSums];
#pragma unroll
    for (int t = 0; t < kSums; ++t) acc[t] = 0.0f;
    for (int c0 = part; c0 < row_chunks; c0 += kWarpsPerRow * kInFlight) {
      uint4 wv[kInFlight];
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int c = c0 + i * kWarpsPerRow;
        const bool up = kGated && c >= chunks;
        const int p = (up ? c - chunks : c) * kWarp + lane;
        // (Past the gate row's chunks p lies past its pieces: the chunk count bounds gated rows only.)
        const bool in = (!kGated || c < row_chunks) && p < pieces;
        wv[i] = in ? gemv::LoadStreamed((up ? up_row : wr) + p) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int c = c0 + i * kWarpsPerRow;
        const bool up = kGated && c >= chunks;
        const int p = (up ? c - chunks : c) * kWarp + lane;
        if ((kGated && c >= row_chunks) || p >= pieces) continue;
        if constexpr (kGated) {  // each row's sum as the plain GEMV's, in the same order
          const float dot = DotPiece(wv[i], __ldg(reinterpret_cast<const uint4*>(x) + p));
          if (up) {
            acc[1] += dot;
          } else {
            acc[0] += dot;
          }
        } else {
#pragma unroll
          for (int t = 0; t < kMaxTokens; ++t) {
            if (t < tokens) acc[t] += DotPiece(wv[i], __ldg(reinterpret_cast<const uint4*>(x + t * x_stride) + p));
          }
        }
      }
    }
    if constexpr (kGated) {
      gemv::FinishGatedRow<Act, kWarpsPerRow, kBlockWarps>(acc, lane, warp, part, row, n, static_cast<bf16*>(out));
    } else {
      gemv::FinishRow<kMaxTokens, kWarpsPerRow, kBlockWarps>(acc, lane, warp, part, row, n, tokens, out, out_stride,
                                                             f32_out);
    }
  }
}

template <int kWarpsPerRow, int kBlockWarps, typename Act = void>
cudaError_t LaunchGemv(const bf16* w, int64_t k, int n, const bf16* x, int64_t x_stride, int tokens, void* out,
                       int64_t out_stride, bool f32_out, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlockWarps / kWarpsPerRow;
  const int groups = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  auto launch = [&](auto kernel) {
    const int grid = std::min(groups, gemv::ResidentBlocks(kernel, kBlockWarps * kWarp));
    return pdl::Launch(kernel, grid, kBlockWarps * kWarp, 0, stream, w, k, n, x, x_stride, tokens, out, out_stride,
                       f32_out);
  };
  static_assert(kBf16GemvMaxTokens == 1, "a kernel for one token");
  return launch(Bf16GemvKernel<1, kWarpsPerRow, kBlockWarps, Act>);
}

// How many warps share a row: 1 (four rows a block) where rows are many, so that every warp has
// rows enough to even out; else 4 (a row a block), or 16 (a row a block of 16 warps) for rows long
// enough to give each warp two chunks or more. On an H100 (docs/performance.md): a warp a row left
// the last pass over Llama-3-8B's 14,336 gate rows partly empty (2.63 TB/s against 2.91 with 4
// warps, and the LM head's 3.12); 16 warps a row lost everywhere but on the down projection's
// 14,336-long rows (41.4 against 43.2 us). KVS_BF16_GEMV_WARPS=1, 4 or 16 forces one (measurement).
int RowSplit(int64_t n, int64_t k) {
  static const int forced = [] {
    const char* e = std::getenv("KVS_BF16_GEMV_WARPS");
    const int v = e == nullptr ? 0 : std::atoi(e);
    return v == 1 || v == 4 || v == 16 ? v : 0;
  }();
  if (forced != 0) return forced;
  if (n >= 32768) return 1;
  return k / (kWarp * kPieceElems) >= 2 * 16 ? 16 : 4;
}

// The kernel for `split` warps a row (RowSplit's answer).
template <typename Act = void>
cudaError_t LaunchSplit(int split, const bf16* w, int64_t k, int n, const bf16* x, int64_t x_stride, int tokens,
                        void* out, int64_t out_stride, bool f32_out, cudaStream_t stream) {
  switch (split) {
    case 1: return LaunchGemv<1, kGemvWarps, Act>(w, k, n, x, x_stride, tokens, out, out_stride, f32_out, stream);
    case 4: return LaunchGemv<4, kGemvWarps, Act>(w, k, n, x, x_stride, tokens, out, out_stride, f32_out, stream);
    default: return LaunchGemv<16, 16, Act>(w, k, n, x, x_stride, tokens, out, out_stride, f32_out, stream);
  }
}

KernelChoice g_cublas("KVS_BF16_GEMV", "cublas");  // alternative: cuBLAS at every token count

}  // namespace

void SetBf16GemvOn(bool on) { g_cublas.Set(!on); }

namespace {
// The alternative to kGatedGemvByDefault, named by the environment's KVS_GATED_GEMV.
KernelChoice g_gated_flip("KVS_GATED_GEMV", kGatedGemvByDefault ? "off" : "on");
}  // namespace
void SetGatedGemvOn(bool on) { g_gated_flip.Set(on != kGatedGemvByDefault); }
bool GatedGemvOn() { return g_gated_flip.Alternative() != kGatedGemvByDefault; }

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
  return LaunchSplit(RowSplit(n, k), w, k, static_cast<int>(n), x, x_stride, static_cast<int>(tokens), out, out_stride,
                     f32_out, stream);
}

cudaError_t LaunchBf16GatedGemv(const bf16* w, int64_t inter, int64_t k, const bf16* x, GatedActivation act, bf16* out,
                                cudaStream_t stream) {
  if (!Fits(w, 2 * inter, k, x, k, 1)) return cudaErrorInvalidValue;
  if (inter == 0) return cudaSuccess;
  // Split as the gate_up matrix's 2 inter rows would be: each warp then walks as many chunks as there.
  const int split = RowSplit(2 * inter, k), n = static_cast<int>(inter);
  return act == GatedActivation::kGeluTanh ? LaunchSplit<GeluTanh>(split, w, k, n, x, k, 1, out, n, false, stream)
                                           : LaunchSplit<Silu>(split, w, k, n, x, k, 1, out, n, false, stream);
}

}  // namespace kvs::cuda
