// FP8 weights kept in 8 bits on the GPU: kvshard's F8_E4M3 blocks (128 E4M3 codes, then their f32
// scale; kernels/common/ggml_types.h), which the CUDA backend re-arranges once at load, row by row,
// into split rows — a row's k codes, then its k / 128 scales (LaunchF8ArrangeRows; same bytes per
// row) — so that the FP8 tensor-core GEMM (f8_gemm.h) reads the codes where they lie (a matrix
// whose rows are row_bytes apart) and each call gathers only the scales. Before, each call split
// every weight tile into codes and scales first: a read and a write of the weights before the
// GEMM read them again, which held F8 batch-32 steps at 0.68x bf16's (H100, docs/performance.md).
// The decode GEMV (1 to kBlockGemvMaxTokens tokens) reads each code once and multiplies it with
// the bf16 activations as they are (no activation rounding: the codes become halves exactly,
// their products and sums are f32), so a step reads about one byte a weight. The row decoder
// feeds the bf16 tiles that the fallback multiplies with cuBLAS, and the embedding lookup. A
// weight is float(code) x scale, rounded once, as the CPU decoder computes it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemv_common.cuh"

namespace kvs::cuda {
namespace {

using gemv::kWarp;
constexpr int kBlockWords = kF8BlockElems / 4;  // a block's codes as 32-bit words
constexpr int kBlockBytes = kF8BlockElems + 4;  // codes, then the f32 scale

// Four E4M3 codes (one word) as floats, exactly (every E4M3 value is a half).
__device__ __forceinline__ void Codes(uint32_t word, float (&v)[4]) {
  const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word & 0xFFFFu), __NV_E4M3);
  const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word >> 16), __NV_E4M3);
  const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
  v[0] = a.x;
  v[1] = a.y;
  v[2] = b.x;
  v[3] = b.y;
}

// Where block b of a row lies: in the file's blocks, codes then scale every kBlockBytes; in split
// rows, codes at 128 b and the scale at k + 4 b.
struct FileBlocks {
  __device__ static const uint8_t* Codes(const uint8_t* row, int64_t /*k*/, int64_t b) { return row + b * kBlockBytes; }
  __device__ static float Scale(const uint8_t* row, int64_t /*k*/, int64_t b) {
    return __ldg(reinterpret_cast<const float*>(row + b * kBlockBytes + kF8BlockElems));
  }
};
struct SplitRows {
  __device__ static const uint8_t* Codes(const uint8_t* row, int64_t /*k*/, int64_t b) {
    return row + b * kF8BlockElems;
  }
  __device__ static float Scale(const uint8_t* row, int64_t k, int64_t b) {
    return __ldg(reinterpret_cast<const float*>(row + k) + b);
  }
};

using gemv::kNarrowRows;
using gemv::ResidentBlocks;
constexpr int kGemvWarps = gemv::kWarps;

// kLaneCodes consecutive codes (or bf16 activations) loaded as one 4-, 8-, 16- or 32-byte piece.
template <int kBytes>
__device__ __forceinline__ void LoadWords(const void* p, uint32_t (&words)[kBytes / 4]) {
  if constexpr (kBytes == 4) {
    words[0] = __ldg(static_cast<const uint32_t*>(p));
  } else if constexpr (kBytes == 8) {
    const uint2 a = __ldg(static_cast<const uint2*>(p));
    words[0] = a.x, words[1] = a.y;
  } else {
    static_assert(kBytes % 16 == 0, "whole 16-byte loads");
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 a = __ldg(static_cast<const uint4*>(p) + i);
      words[4 * i] = a.x, words[4 * i + 1] = a.y, words[4 * i + 2] = a.z, words[4 * i + 3] = a.w;
    }
  }
}

// out[t, row] = x[t] . w[row]. kWarpsPerRow warps share a row (4 for matrices of few rows, whose
// single warps would each wait through a long row alone). A warp takes 32 kLaneCodes codes at a
// time, lane l the kLaneCodes codes from kLaneCodes l with their block's scale and the bf16
// activations beside them. kLaneCodes is 16 (one coalesced 512-byte load: four blocks) where rows
// and activations are 16-byte aligned, else 4 (a block a word a lane, which left the H200's step
// at 58% of its memory floor). The grid is what stays resident, looping over the rows (as
// block_linear.cu's GEMV).
// 12 blocks an SM (40 registers) where a lane's loads are words; 8 (64) for 16-byte pieces, whose
// four chunks in flight a lane (64 bytes) spilled at 40.
// kStreamed: 16-byte weight pieces kept out of L1, as the bf16 GEMV's (one token: the default,
// 2.5% off an H100's F8 batch-1 step, docs/performance.md; KVS_F8_GEMV_LOADS=cached keeps them in L1).
template <int kMaxTokens, int kWarpsPerRow, int kLaneCodes, bool kStreamed = false>
__global__ void __launch_bounds__(kGemvWarps* kWarp, kMaxTokens <= 2 && kLaneCodes == 4 ? 12 : 8)
    F8GemvKernel(const uint8_t* __restrict__ w, int64_t row_bytes, int n, int blocks, const bf16* __restrict__ x,
                 int64_t x_stride, int tokens, void* out, int64_t out_stride, bool f32_out) {
  constexpr int kRowsPerBlock = kGemvWarps / kWarpsPerRow;
  constexpr int kLanesPerBlock = kF8BlockElems / kLaneCodes;
  constexpr int kChunkBlocks = kWarp / kLanesPerBlock;  // blocks a warp takes at a time
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int part = warp % kWarpsPerRow;
  gemv::PrefetchFirstRows<kRowsPerBlock, kWarpsPerRow>(w, row_bytes, n, lane, warp, part);
  pdl::StartAfterPrevious();
  const int64_t k = static_cast<int64_t>(blocks) * kF8BlockElems;  // split rows: the scales after the codes
  const int chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
  for (int group = blockIdx.x; group * kRowsPerBlock < n; group += gridDim.x) {
    const int row = group * kRowsPerBlock + warp / kWarpsPerRow;
    const uint8_t* wr = w + static_cast<int64_t>(min(row, n - 1)) * row_bytes;
    float acc[kMaxTokens];
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) acc[t] = 0.0f;
    // kInFlight chunks' codes and scales loaded before any is used: the loop waits on loads, not on
    // issue (with a bounds check in each unrolled step the compiler kept one load in flight).
    constexpr int kInFlight = kMaxTokens <= 2 ? 4 : 2;
    for (int c0 = part; c0 < chunks; c0 += kWarpsPerRow * kInFlight) {
      uint32_t codes[kInFlight][kLaneCodes / 4];
      float scale[kInFlight];
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int b = kChunkBlocks * (c0 + i * kWarpsPerRow) + lane / kLanesPerBlock;
        const int64_t col = static_cast<int64_t>(b) * kF8BlockElems + kLaneCodes * (lane % kLanesPerBlock);
        if (b < blocks) {             // the row's last chunks may hold fewer blocks, or none
          if constexpr (kStreamed) {  // weights streamed past L1, which keeps the activations
            const uint4 piece = gemv::LoadStreamed(SplitRows::Codes(wr, k, 0) + col);
            codes[i][0] = piece.x, codes[i][1] = piece.y, codes[i][2] = piece.z, codes[i][3] = piece.w;
          } else {
            LoadWords<kLaneCodes>(SplitRows::Codes(wr, k, 0) + col, codes[i]);
          }
          scale[i] = SplitRows::Scale(wr, k, b);
        } else {
#pragma unroll
          for (int j = 0; j < kLaneCodes / 4; ++j) codes[i][j] = 0;
          scale[i] = 0.0f;
        }
      }
#pragma unroll
      for (int i = 0; i < kInFlight; ++i) {
        const int b = kChunkBlocks * (c0 + i * kWarpsPerRow) + lane / kLanesPerBlock;
        if (b >= blocks) continue;
        const int64_t col = static_cast<int64_t>(b) * kF8BlockElems + kLaneCodes * (lane % kLanesPerBlock);
        float v[kLaneCodes];
#pragma unroll
        for (int j = 0; j < kLaneCodes / 4; ++j) Codes(codes[i][j], *reinterpret_cast<float(*)[4]>(v + 4 * j));
        auto dot_with = [&](const bf16* xt) {  // the chunk's dot with token xt, before the block's scale
          uint32_t xw[kLaneCodes / 2];
          LoadWords<2 * kLaneCodes>(xt + col, xw);
          float dot = 0.0f;
#pragma unroll
          for (int j = 0; j < kLaneCodes / 2; ++j) {
            const float2 xf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xw[j]));
            dot += v[2 * j] * xf.x + v[2 * j + 1] * xf.y;
          }
          return dot;
        };
#pragma unroll
        for (int t = 0; t < kMaxTokens; ++t) {
          if (t < tokens) acc[t] += scale[i] * dot_with(x + t * x_stride);
        }
      }
    }
    gemv::FinishRow<kMaxTokens, kWarpsPerRow>(acc, lane, warp, part, row, n, tokens, out, out_stride, f32_out);
  }
}

// One token's 16-byte pieces streamed past L1 (kStreamed), unless KVS_F8_GEMV_LOADS=cached (measurement).
bool StreamedLoads() {
  static const bool streamed = [] {
    const char* e = std::getenv("KVS_F8_GEMV_LOADS");
    return e == nullptr || std::string_view(e) != "cached";
  }();
  return streamed;
}

template <int kWarpsPerRow, int kLaneCodes>
cudaError_t LaunchGemv(const uint8_t* w, int64_t row_bytes, int n, int blocks, const bf16* x, int64_t x_stride,
                       int tokens, void* out, int64_t out_stride, bool f32_out, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kGemvWarps / kWarpsPerRow;
  const int groups = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  auto launch = [&](auto kernel) {
    const int grid = std::min(groups, ResidentBlocks(kernel, kGemvWarps * kWarp));
    return pdl::Launch(kernel, grid, kGemvWarps * kWarp, 0, stream, w, row_bytes, n, blocks, x, x_stride, tokens, out,
                       out_stride, f32_out);
  };
  if (tokens == 1 && kLaneCodes == 16 && StreamedLoads())
    return launch(F8GemvKernel<1, kWarpsPerRow, kLaneCodes, true>);
  if (tokens == 1) return launch(F8GemvKernel<1, kWarpsPerRow, kLaneCodes>);
  if (tokens == 2) return launch(F8GemvKernel<2, kWarpsPerRow, kLaneCodes>);
  if (tokens <= 4) return launch(F8GemvKernel<4, kWarpsPerRow, kLaneCodes>);
  return launch(F8GemvKernel<kBlockGemvMaxTokens, kWarpsPerRow, kLaneCodes>);
}

// A thread per word (4 weights) of the output rows: out row r = source row row_of(r) decoded, or
// zeros where row_of gives -1 (an embedding id another rank holds).
template <typename Layout, typename Out, typename RowOf>
__global__ void F8DecodeKernel(const uint8_t* __restrict__ src, int64_t src_stride, int64_t rows, int64_t words,
                               RowOf row_of, Out* __restrict__ out, int64_t out_stride) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * words) return;
  const int64_t r = i / words, wi = i % words;
  const int64_t from = row_of(r);
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (from >= 0) {
    const uint8_t* row = src + from * src_stride;
    const int64_t k = 4 * words, b = wi / kBlockWords;
    Codes(reinterpret_cast<const uint32_t*>(Layout::Codes(row, k, b))[wi % kBlockWords], v);
    const float scale = Layout::Scale(row, k, b);
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = __fmul_rn(v[e], scale);
  }
  Out* dst = out + r * out_stride + 4 * wi;
  if constexpr (sizeof(Out) == 2) {
    __nv_bfloat162 pair[2] = {__floats2bfloat162_rn(v[0], v[1]), __floats2bfloat162_rn(v[2], v[3])};
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(pair);
  } else {
    *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
  }
}

template <typename Layout, typename RowOf>
cudaError_t LaunchDecode(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols, RowOf row_of, void* out,
                         int64_t out_stride, bool f32_out, cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  if (cols % kF8BlockElems != 0 || reinterpret_cast<uintptr_t>(src) % 4 != 0 || src_stride % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  constexpr int kThreads = 256;
  const int64_t words = cols / 4, threads = rows * words;
  const int64_t grid = (threads + kThreads - 1) / kThreads;
  if (f32_out) {
    F8DecodeKernel<Layout>
        <<<grid, kThreads, 0, stream>>>(src, src_stride, rows, words, row_of, static_cast<float*>(out), out_stride);
  } else {
    F8DecodeKernel<Layout>
        <<<grid, kThreads, 0, stream>>>(src, src_stride, rows, words, row_of, static_cast<bf16*>(out), out_stride);
  }
  return cudaGetLastError();
}

struct SameRow {
  __device__ int64_t operator()(int64_t r) const { return r; }
};
struct EmbeddingRow {
  const int32_t* ids;
  int32_t first_id;
  int64_t table_rows;
  __device__ int64_t operator()(int64_t r) const {
    const int64_t row = static_cast<int64_t>(ids[r]) - first_id;
    return row >= 0 && row < table_rows ? row : -1;
  }
};

// The FP8 GEMM's weight scales (f8_gemm.h): block b of split row r at scales[b * rows + r]
// (cuBLASLt's 1 x 128 block scales: the outer dimension contiguous). A thread per scale; the
// codes stay where they are.
__global__ void F8GatherScalesKernel(const uint8_t* __restrict__ w, int64_t row_bytes, int64_t rows, int blocks,
                                     float* __restrict__ scales) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * blocks) return;
  const int64_t r = i % rows, b = i / rows;  // consecutive threads write consecutive scales
  scales[i] = SplitRows::Scale(w + r * row_bytes, static_cast<int64_t>(blocks) * kF8BlockElems, b);
}

// The FP8 GEMM's activation operand: x [tokens][k] bf16 to E4M3 codes [tokens][k] with one f32
// scale per token and 128 columns (amax / 448, so the block's largest element is E4M3's largest
// finite; 1 for a block of zeros), scale of block b of token t at scales[b * tokens + t]. A warp per
// block, four elements a lane. A NaN stays NaN in its own block (satfinite keeps NaN), so it
// reaches only its token's outputs.
__global__ void F8QuantizeActivationsKernel(const bf16* __restrict__ x, int64_t x_stride, int64_t tokens, int blocks,
                                            uint8_t* __restrict__ codes, float* __restrict__ scales) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (warp >= tokens * blocks) return;
  const int64_t t = warp / blocks;
  const int b = static_cast<int>(warp % blocks);
  const int64_t col = static_cast<int64_t>(b) * kF8BlockElems + 4 * lane;
  const uint2 raw = __ldg(reinterpret_cast<const uint2*>(x + t * x_stride + col));
  const float2 v01 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 v23 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  float amax = fmaxf(fmaxf(fabsf(v01.x), fabsf(v01.y)), fmaxf(fabsf(v23.x), fabsf(v23.y)));
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  const float inv = 1.0f / scale;
  const __nv_fp8x2_storage_t lo =
      __nv_cvt_float2_to_fp8x2(make_float2(v01.x * inv, v01.y * inv), __NV_SATFINITE, __NV_E4M3);
  const __nv_fp8x2_storage_t hi =
      __nv_cvt_float2_to_fp8x2(make_float2(v23.x * inv, v23.y * inv), __NV_SATFINITE, __NV_E4M3);
  *reinterpret_cast<uint32_t*>(codes + t * blocks * kF8BlockElems + col) =
      static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  if (lane == 0) scales[static_cast<int64_t>(b) * tokens + t] = scale;
}

// How many warps share a row: 4 for matrices of at most kNarrowRows rows, else 1.
// KVS_F8_GEMV_WARPS=1 or 4 forces one (measurement).
int WarpsPerRow(int64_t n) {
  static const int forced = [] {
    const char* e = std::getenv("KVS_F8_GEMV_WARPS");
    const int v = e == nullptr ? 0 : std::atoi(e);
    return v == 1 || v == 4 ? v : 0;
  }();
  if (forced != 0) return forced;
  return n <= kNarrowRows ? 4 : 1;
}

}  // namespace

cudaError_t LaunchF8ArrangeRows(void* w, int64_t row_bytes, int64_t rows, int64_t k, cudaStream_t stream) {
  if (k % kF8BlockElems != 0 || row_bytes != k / kF8BlockElems * kBlockBytes ||
      reinterpret_cast<uintptr_t>(w) % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0 || k == 0) return cudaSuccess;
  // A block is its 128 codes (the payload, first), then its f32 scale (the header).
  return LaunchSplitRowParts(w, row_bytes, rows, k / kF8BlockElems, /*header=*/4, /*payload_at=*/0,
                             /*payload=*/kF8BlockElems, stream);
}

cudaError_t LaunchF8GatherScales(const void* w, int64_t row_bytes, int64_t rows, int64_t k, float* scales,
                                 cudaStream_t stream) {
  if (k % kF8BlockElems != 0 || row_bytes % 4 != 0 || reinterpret_cast<uintptr_t>(w) % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  const int blocks = static_cast<int>(k / kF8BlockElems);
  if (rows * blocks == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t grid = (rows * blocks + kThreads - 1) / kThreads;
  F8GatherScalesKernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t*>(w), row_bytes, rows, blocks, scales);
  return cudaGetLastError();
}

cudaError_t LaunchF8QuantizeActivations(const bf16* x, int64_t x_stride, int64_t tokens, int64_t k, uint8_t* codes,
                                        float* scales, cudaStream_t stream) {
  if (k % kF8BlockElems != 0 || x_stride % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 8 != 0 ||
      reinterpret_cast<uintptr_t>(codes) % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  const int blocks = static_cast<int>(k / kF8BlockElems);
  if (tokens * blocks == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t grid = (tokens * blocks * kWarp + kThreads - 1) / kThreads;
  F8QuantizeActivationsKernel<<<grid, kThreads, 0, stream>>>(x, x_stride, tokens, blocks, codes, scales);
  return cudaGetLastError();
}

cudaError_t LaunchF8Gemv(const void* w, int64_t row_bytes, int64_t n, int64_t k, const bf16* x, int64_t x_stride,
                         int64_t tokens, void* out, int64_t out_stride, bool f32_out, cudaStream_t stream) {
  if (tokens <= 0 || tokens > kBlockGemvMaxTokens || k % kF8BlockElems != 0 || row_bytes % 4 != 0 ||
      reinterpret_cast<uintptr_t>(w) % 4 != 0 || reinterpret_cast<uintptr_t>(x) % 8 != 0 || x_stride % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  const auto* wb = static_cast<const uint8_t*>(w);
  const int blocks = static_cast<int>(k / kF8BlockElems);
  // 16-byte pieces where rows (a multiple of four blocks: every real model's k) and activations allow.
  const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(x) % 16 == 0 && x_stride % 8 == 0;
  const int rows = static_cast<int>(n), t = static_cast<int>(tokens);
  if (WarpsPerRow(n) == 4) {
    return wide ? LaunchGemv<4, 16>(wb, row_bytes, rows, blocks, x, x_stride, t, out, out_stride, f32_out, stream)
                : LaunchGemv<4, 4>(wb, row_bytes, rows, blocks, x, x_stride, t, out, out_stride, f32_out, stream);
  }
  return wide ? LaunchGemv<1, 16>(wb, row_bytes, rows, blocks, x, x_stride, t, out, out_stride, f32_out, stream)
              : LaunchGemv<1, 4>(wb, row_bytes, rows, blocks, x, x_stride, t, out, out_stride, f32_out, stream);
}

cudaError_t LaunchF8Dequantize(const void* src, int64_t src_stride, int64_t rows, int64_t cols, void* out, bool f32_out,
                               bool split_rows, cudaStream_t stream) {
  const auto* s = static_cast<const uint8_t*>(src);
  return split_rows ? LaunchDecode<SplitRows>(s, src_stride, rows, cols, SameRow{}, out, cols, f32_out, stream)
                    : LaunchDecode<FileBlocks>(s, src_stride, rows, cols, SameRow{}, out, cols, f32_out, stream);
}

cudaError_t LaunchF8Embedding(const int32_t* ids, int64_t tokens, const void* table, int64_t row_bytes,
                              int32_t first_id, int64_t table_rows, int64_t hidden, float* out, int64_t out_stride,
                              cudaStream_t stream) {
  if (out_stride % 4 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0) return cudaErrorInvalidValue;
  return LaunchDecode<SplitRows>(static_cast<const uint8_t*>(table), row_bytes, tokens, hidden,
                                 EmbeddingRow{ids, first_id, table_rows}, out, out_stride, /*f32_out=*/true, stream);
}

}  // namespace kvs::cuda
