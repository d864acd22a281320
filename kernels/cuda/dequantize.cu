// GGUF weights decoded on the GPU: the stored blocks are copied to the device as they are (a
// Q4_0 matrix is ~3.6x smaller than its bf16 form) and decoded there, a thread per 32 weights
// (ggml_unit.cuh) for the block types and per element for the plain float types. The arithmetic
// is the CPU decoder's (kernels/cpu/dequantize.cc) with multiply and add rounded separately (no
// fused multiply-add), so both produce the same float before the bf16 rounding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/ggml_unit.cuh"

namespace kvs::cuda {
namespace {

__device__ inline uint32_t LoadU16(const uint8_t* p) { return p[0] | (static_cast<uint32_t>(p[1]) << 8); }
__device__ inline uint32_t LoadU32(const uint8_t* p) { return LoadU16(p) | (LoadU16(p + 2) << 16); }

__device__ float DecodePlain(GgmlType type, const uint8_t* row, int64_t col) {
  switch (type) {
    case GgmlType::kF32:
      return __uint_as_float(LoadU32(row + 4 * col));
    case GgmlType::kF16:
      return __half2float(__ushort_as_half(static_cast<unsigned short>(LoadU16(row + 2 * col))));
    case GgmlType::kBF16:
      return __uint_as_float(LoadU16(row + 2 * col) << 16);
    default:
      return __int_as_float(0x7fc00000);  // unreachable: the launcher checked the type
  }
}

template <typename Out>
__device__ __forceinline__ void Store(Out* out, int64_t i, float v) {
  if constexpr (sizeof(Out) == 2) {
    out[i] = __float2bfloat16_rn(v);
  } else {
    out[i] = v;
  }
}

template <typename Out>
__global__ void DequantizePlainKernel(GgmlType type, const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols,
                                      Out* out) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Store(out, i, DecodePlain(type, src + (i / cols) * src_stride, i % cols));
  }
}

constexpr int kBlockThreads = 128;

// A thread per unit of 32 weights; adjacent threads decode adjacent units. Where the output is
// 16-byte aligned, each warp stages its 32 units' bf16 values (2 KB) in shared memory and writes
// them back in coalesced 16-byte stores: a store per value left the decode store-bound (an 8B
// model's weights took 86 ms a pass on the H200), and a lane's own 64 bytes per store round half
// filled every sector it touched.
// kKept: rows in the layout the CUDA backend keeps weights in (split rows but for Q8_K), else as
// stored.
template <GgmlType T, bool kKept>
__device__ __forceinline__ ggml::Unit ReadAt(const uint8_t* row, int64_t units, int64_t u) {
  using Tr = ggml::Traits<T>;
  if constexpr (kKept) {
    return ggml::ReadRowUnit<T>(row, static_cast<int>(units), static_cast<int>(u));
  } else {
    return ggml::ReadUnit<T>(row + (u / Tr::kUnits) * Tr::kBlockBytes, u % Tr::kUnits);
  }
}

template <GgmlType T, typename Out, bool kVector, bool kKept>
__global__ void __launch_bounds__(kBlockThreads)
    DequantizeBlocksKernel(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t units, Out* out) {
  using Tr = ggml::Traits<T>;
  const int64_t total = rows * units;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if constexpr (kVector && sizeof(Out) == 2) {
    __shared__ uint4 stage[kBlockThreads / 32][32 * 4];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t first = i - lane;  // the warp's first unit
    if (first >= total) return;
    if (i < total) {
      const int64_t row = i / units, u = i % units;
      const ggml::Unit r = ReadAt<T, kKept>(src + row * src_stride, units, u);
      uint32_t packed[16];
#pragma unroll
      for (int w = 0; w < 8; ++w) {
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const __nv_bfloat162 pair = __floats2bfloat162_rn(ggml::Weight<Tr::kHasMin>(r, w, 2 * k),
                                                            ggml::Weight<Tr::kHasMin>(r, w, 2 * k + 1));
          packed[2 * w + k] = *reinterpret_cast<const uint32_t*>(&pair);
        }
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        stage[warp][4 * lane + c] = make_uint4(packed[4 * c], packed[4 * c + 1], packed[4 * c + 2], packed[4 * c + 3]);
      }
    }
    __syncwarp();
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int chunk = 32 * c + lane;  // 16-byte chunk of the warp's region: unit chunk / 4
      if (first + chunk / 4 < total) reinterpret_cast<uint4*>(out)[first * 4 + chunk] = stage[warp][chunk];
    }
    return;
  }
  if (i >= total) return;
  const int64_t row = i / units, u = i % units;
  const ggml::Unit r = ReadAt<T, kKept>(src + row * src_stride, units, u);
  Out* dst = out + i * 32;
  if constexpr (kVector) {
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      reinterpret_cast<float4*>(dst)[w] =
          make_float4(ggml::Weight<Tr::kHasMin>(r, w, 0), ggml::Weight<Tr::kHasMin>(r, w, 1),
                      ggml::Weight<Tr::kHasMin>(r, w, 2), ggml::Weight<Tr::kHasMin>(r, w, 3));
    }
  } else {
#pragma unroll
    for (int w = 0; w < 8; ++w)
#pragma unroll
      for (int k = 0; k < 4; ++k) Store(dst, 4 * w + k, ggml::Weight<Tr::kHasMin>(r, w, k));
  }
}

template <GgmlType T>
struct DequantizeLaunch {
  static cudaError_t Run(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols, void* out, bool f32_out,
                         bool kept, cudaStream_t stream) {
    return kept ? Launch<true>(src, src_stride, rows, cols, out, f32_out, stream)
                : Launch<false>(src, src_stride, rows, cols, out, f32_out, stream);
  }
  template <bool kKept>
  static cudaError_t Launch(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols, void* out, bool f32_out,
                            cudaStream_t stream) {
    if (!ggml::RowsAligned<T>(src, src_stride)) return cudaErrorInvalidValue;
    constexpr int kThreads = kBlockThreads;
    const int64_t units = cols / 32, grid = (rows * units + kThreads - 1) / kThreads;
    const bool vector = reinterpret_cast<uintptr_t>(out) % 16 == 0;
    auto* o32 = static_cast<float*>(out);
    auto* o16 = static_cast<bf16*>(out);
    if (f32_out && vector) {
      DequantizeBlocksKernel<T, float, true, kKept><<<grid, kThreads, 0, stream>>>(src, src_stride, rows, units, o32);
    } else if (f32_out) {
      DequantizeBlocksKernel<T, float, false, kKept><<<grid, kThreads, 0, stream>>>(src, src_stride, rows, units, o32);
    } else if (vector) {
      DequantizeBlocksKernel<T, bf16, true, kKept><<<grid, kThreads, 0, stream>>>(src, src_stride, rows, units, o16);
    } else {
      DequantizeBlocksKernel<T, bf16, false, kKept><<<grid, kThreads, 0, stream>>>(src, src_stride, rows, units, o16);
    }
    return cudaGetLastError();
  }
};

}  // namespace

namespace {

cudaError_t Dequantize(GgmlType type, const void* src, int64_t src_stride, int64_t rows, int64_t cols, void* out,
                       bool f32_out, bool kept, cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  const auto* s = static_cast<const uint8_t*>(src);
  if (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16) {
    constexpr int kThreads = 256;
    const int64_t blocks = std::min<int64_t>((rows * cols + kThreads - 1) / kThreads, int64_t{1} << 20);
    if (f32_out) {
      DequantizePlainKernel<<<blocks, kThreads, 0, stream>>>(type, s, src_stride, rows, cols, static_cast<float*>(out));
    } else {
      DequantizePlainKernel<<<blocks, kThreads, 0, stream>>>(type, s, src_stride, rows, cols, static_cast<bf16*>(out));
    }
    return cudaGetLastError();
  }
  if (type == GgmlType::kF8_E4M3) return LaunchF8Dequantize(src, src_stride, rows, cols, out, f32_out, kept, stream);
  if (cols % 32 != 0) return cudaErrorInvalidValue;
  return ggml::DispatchBlockType<DequantizeLaunch>(type, s, src_stride, rows, cols, out, f32_out, kept, stream);
}

}  // namespace

cudaError_t LaunchDequantize(GgmlType type, const void* src, int64_t src_stride, int64_t rows, int64_t cols, void* out,
                             bool f32_out, cudaStream_t stream) {
  return Dequantize(type, src, src_stride, rows, cols, out, f32_out, /*kept=*/false, stream);
}

cudaError_t LaunchDequantizeKept(GgmlType type, const void* w, int64_t row_bytes, int64_t rows, int64_t cols, void* out,
                                 bool f32_out, cudaStream_t stream) {
  return Dequantize(type, w, row_bytes, rows, cols, out, f32_out, /*kept=*/true, stream);
}

}  // namespace kvs::cuda
