// GGUF weights decoded on the GPU: the stored blocks are copied to the device as they are (a
// Q4_0 matrix is ~3.6x smaller than its bf16 form) and each thread decodes one element. The
// arithmetic is the CPU decoder's (kernels/cpu/dequantize.cc) with multiply and add rounded
// separately (no fused multiply-add), so both produce the same float before the bf16 rounding.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

__device__ inline uint32_t LoadU16(const uint8_t* p) { return p[0] | (static_cast<uint32_t>(p[1]) << 8); }
__device__ inline uint32_t LoadU32(const uint8_t* p) { return LoadU16(p) | (LoadU16(p + 2) << 16); }
__device__ inline float LoadHalf(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(LoadU16(p))));
}
// q * d + m, each step rounded on its own as on the CPU.
__device__ inline float Affine(int q, float d, float m) { return __fadd_rn(__fmul_rn(static_cast<float>(q), d), m); }

__device__ float DecodeElement(GgmlType type, const uint8_t* row, int64_t col) {
  switch (type) {
    case GgmlType::kF32:
      return __uint_as_float(LoadU32(row + 4 * col));
    case GgmlType::kF16:
      return LoadHalf(row + 2 * col);
    case GgmlType::kBF16:
      return __uint_as_float(LoadU16(row + 2 * col) << 16);
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1: {
      const bool has_min = type == GgmlType::kQ4_1;
      const uint8_t* block = row + (col / 32) * (has_min ? 20 : 18);
      const int j = static_cast<int>(col % 32);
      const float d = LoadHalf(block), m = has_min ? LoadHalf(block + 2) : 0.0f;
      const uint8_t* qs = block + (has_min ? 4 : 2);
      const int q = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
      return Affine(q - (has_min ? 0 : 8), d, m);
    }
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1: {
      const bool has_min = type == GgmlType::kQ5_1;
      const uint8_t* block = row + (col / 32) * (has_min ? 24 : 22);
      const int j = static_cast<int>(col % 32);
      const float d = LoadHalf(block), m = has_min ? LoadHalf(block + 2) : 0.0f;
      const uint32_t qh = LoadU32(block + (has_min ? 4 : 2));
      const uint8_t* qs = block + (has_min ? 8 : 6);
      const int low4 = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
      const int q = low4 | static_cast<int>(((qh >> j) & 1u) << 4);  // bit j holds element j's fifth bit
      return Affine(q - (has_min ? 0 : 16), d, m);
    }
    case GgmlType::kQ8_0: {
      const uint8_t* block = row + (col / 32) * 34;
      return __fmul_rn(static_cast<float>(static_cast<int8_t>(block[2 + col % 32])), LoadHalf(block));
    }
  }
  return __int_as_float(0x7fc00000);  // unreachable: the launcher checked the type
}

template <typename Out>
__global__ void DequantizeKernel(GgmlType type, const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols,
                                 Out* out) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = DecodeElement(type, src + (i / cols) * src_stride, i % cols);
    if constexpr (sizeof(Out) == 2) {
      out[i] = __float2bfloat16_rn(v);
    } else {
      out[i] = v;
    }
  }
}

}  // namespace

cudaError_t LaunchDequantize(GgmlType type, const void* src, int64_t src_stride, int64_t rows, int64_t cols, void* out,
                             bool f32_out, cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((rows * cols + kThreads - 1) / kThreads, int64_t{1} << 20);
  const auto* s = static_cast<const uint8_t*>(src);
  if (f32_out) {
    DequantizeKernel<<<blocks, kThreads, 0, stream>>>(type, s, src_stride, rows, cols, static_cast<float*>(out));
  } else {
    DequantizeKernel<<<blocks, kThreads, 0, stream>>>(type, s, src_stride, rows, cols, static_cast<bf16*>(out));
  }
  return cudaGetLastError();
}

}  // namespace kvs::cuda
