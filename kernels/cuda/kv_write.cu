// Scatter of this step's K and V rows into their pages, encoded in the cache's KvDType.
// bf16: one block per token, 16-byte copies. Other formats: one warp per (token, head, K|V) row,
// each lane holding E = D / 32 consecutive elements; the row's (or int4 group's) range is a warp
// shuffle reduction, so a token is quantized in one pass with no scratch memory.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/common/kv_quant.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace {

// 16-byte copies when rows and strides allow (the usual case: width = kv_heads * head_dim).
__global__ void WriteKvVecKernel(const uint4* k, int64_t k_stride, const uint4* v, int64_t v_stride,
                                 const int32_t* slot_mapping, uint4* k_cache, uint4* v_cache, int64_t width) {
  pdl::StartAfterPrevious();
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_cache[slot * width + c] = k[t * k_stride + c];
    v_cache[slot * width + c] = v[t * v_stride + c];
  }
}

__global__ void WriteKvKernel(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                              const int32_t* slot_mapping, bf16* k_cache, bf16* v_cache, int64_t width) {
  pdl::StartAfterPrevious();
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_cache[slot * width + c] = k[t * k_stride + c];
    v_cache[slot * width + c] = v[t * v_stride + c];
  }
}

// Channel-quantized caches: a slot s <= -2 is row -(s + 2) of the residual rings, bf16 rows as a
// bf16 cache stores them; the paged blocks are written whole by SealKvGroups (kivi_seal.cu), so
// other slots write nothing.
__global__ void WriteResidualKernel(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                                    const int32_t* slot_mapping, bf16* k_residual, bf16* v_residual, int64_t rows,
                                    int64_t width) {
  pdl::StartAfterPrevious();
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot > -2 || -(slot + 2) >= rows) return;
  const int64_t r = -(slot + 2);
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_residual[r * width + c] = k[t * k_stride + c];
    v_residual[r * width + c] = v[t * v_stride + c];
  }
}

template <int E>
__device__ inline void LoadRow(const bf16* src, int lane, float* x) {
  if constexpr (E == 2) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src + lane * 2));
    x[0] = f.x, x[1] = f.y;
  } else {
    static_assert(E == 4, "head_dim 64 or 128");
    const uint2 u = *reinterpret_cast<const uint2*>(src + lane * 4);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
    x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
  }
}

// Reduces over the `width` lanes (a power of two) that share a group.
template <bool kMax>
__device__ inline float GroupReduce(float v, int width) {
  for (int o = width / 2; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, other) : fminf(v, other);
  }
  return v;
}

template <KvDType F, int E>
__global__ void WriteKvEncodedKernel(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                                     const int32_t* slot_mapping, int64_t num_rows, PagedKvView cache) {
  pdl::StartAfterPrevious();
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= num_rows) return;  // whole warps leave together
  const int is_v = static_cast<int>(row % 2);
  const int64_t t = row / 2 / cache.kv_heads;
  const int h = static_cast<int>(row / 2 % cache.kv_heads);
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;
  const bf16* src = (is_v ? v + t * v_stride : k + t * k_stride) + static_cast<int64_t>(h) * cache.head_dim;
  unsigned char* base = static_cast<unsigned char*>(is_v ? cache.v : cache.k);
  unsigned char* codes = base + cache.RowOffset(slot, h);
  unsigned char* scales = base + cache.ScaleOffset(slot, h);
  float x[E];
  LoadRow<E>(src, lane, x);
  if constexpr (F == KvDType::kF16) {
#pragma unroll
    for (int i = 0; i < E; i += 2) {
      *reinterpret_cast<__half2*>(codes + (lane * E + i) * 2) = __floats2half2_rn(x[i], x[i + 1]);
    }
  } else if constexpr (F == KvDType::kFP8 || F == KvDType::kINT8) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < E; ++i) amax = fmaxf(amax, fabsf(x[i]));
    amax = GroupReduce<true>(amax, 32);
    const float s = F == KvDType::kFP8 ? Fp8Scale(amax) : Int8Scale(amax);
    const float inv = SafeInverse(s);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      codes[lane * E + i] = F == KvDType::kFP8
                                ? static_cast<unsigned char>(__nv_cvt_float_to_fp8(x[i] * inv, __NV_SATFINITE, __NV_E4M3))
                                : static_cast<unsigned char>(QuantizeInt8(x[i], inv));
    }
    if (lane == 0) *reinterpret_cast<float*>(scales) = s;
  } else {
    static_assert(F == KvDType::kINT4, "format");
    constexpr int kLanesPerGroup = kKvInt4Group / E;
    float lo = x[0], hi = x[0];
#pragma unroll
    for (int i = 1; i < E; ++i) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    lo = GroupReduce<false>(lo, kLanesPerGroup);
    hi = GroupReduce<true>(hi, kLanesPerGroup);
    // Quantize against the fp16-rounded scale and zero: the ones a reader will use.
    const __half s_h = __float2half_rn((hi - lo) / kInt4Levels), z_h = __float2half_rn(lo);
    const float s = __half2float(s_h), z = __half2float(z_h), inv = SafeInverse(s);
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < E; ++i) packed |= static_cast<uint32_t>(QuantizeInt4(x[i], z, inv)) << (4 * i);
    if constexpr (E == 2) {
      codes[lane] = static_cast<unsigned char>(packed);
    } else {
      *reinterpret_cast<uint16_t*>(codes + lane * 2) = static_cast<uint16_t>(packed);
    }
    if (lane % kLanesPerGroup == 0) {
      *reinterpret_cast<__half2*>(scales + (lane / kLanesPerGroup) * 4) = __halves2half2(s_h, z_h);
    }
  }
}

template <KvDType F>
cudaError_t LaunchEncoded(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride, int64_t num_tokens,
                          const int32_t* slot_mapping, const PagedKvView& cache, cudaStream_t stream) {
  const int64_t rows = num_tokens * cache.kv_heads * 2;
  const int64_t blocks = (rows + 3) / 4;  // four warps per block
  if (cache.head_dim == 64) {
    return pdl::Launch(WriteKvEncodedKernel<F, 2>, static_cast<unsigned>(blocks), 128, 0, stream, k, k_stride, v,
                       v_stride, slot_mapping, rows, cache);
  }
  if (cache.head_dim == 128) {
    return pdl::Launch(WriteKvEncodedKernel<F, 4>, static_cast<unsigned>(blocks), 128, 0, stream, k, k_stride, v,
                       v_stride, slot_mapping, rows, cache);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchWriteKv(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride, int64_t num_tokens,
                          const int32_t* slot_mapping, const PagedKvView& cache, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  switch (cache.dtype) {
    case KvDType::kBF16: break;
    case KvDType::kF16: return LaunchEncoded<KvDType::kF16>(k, k_stride, v, v_stride, num_tokens, slot_mapping, cache, stream);
    case KvDType::kFP8: return LaunchEncoded<KvDType::kFP8>(k, k_stride, v, v_stride, num_tokens, slot_mapping, cache, stream);
    case KvDType::kINT8: return LaunchEncoded<KvDType::kINT8>(k, k_stride, v, v_stride, num_tokens, slot_mapping, cache, stream);
    case KvDType::kINT4: return LaunchEncoded<KvDType::kINT4>(k, k_stride, v, v_stride, num_tokens, slot_mapping, cache, stream);
    case KvDType::kKivi4:
    case KvDType::kKivi2: {
      if (cache.k_residual == nullptr) return cudaErrorInvalidValue;
      const int64_t rows = static_cast<int64_t>(cache.num_residual) * cache.residual_blocks * cache.block_size;
      return pdl::Launch(WriteResidualKernel, static_cast<unsigned>(num_tokens), 128, 0, stream, k, k_stride, v,
                         v_stride, slot_mapping, static_cast<bf16*>(cache.k_residual),
                         static_cast<bf16*>(cache.v_residual), rows, cache.SlotStride());
    }
    case KvDType::kF32: return cudaErrorInvalidValue;
  }
  const int64_t width = cache.SlotStride();
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (width % 8 == 0 && k_stride % 8 == 0 && v_stride % 8 == 0 && aligned(k) && aligned(v) && aligned(cache.k) &&
      aligned(cache.v)) {
    return pdl::Launch(WriteKvVecKernel, static_cast<unsigned>(num_tokens), 128, 0, stream,
                       reinterpret_cast<const uint4*>(k), k_stride / 8, reinterpret_cast<const uint4*>(v), v_stride / 8,
                       slot_mapping, static_cast<uint4*>(cache.k), static_cast<uint4*>(cache.v), width / 8);
  }
  return pdl::Launch(WriteKvKernel, static_cast<unsigned>(num_tokens), 128, 0, stream, k, k_stride, v, v_stride,
                     slot_mapping, static_cast<bf16*>(cache.k), static_cast<bf16*>(cache.v), cache.SlotStride());
}

}  // namespace kvs::cuda
