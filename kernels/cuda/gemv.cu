// Skinny matrix products for decode: out[t, n] = sum_k x[t, k] * w[n, k] for up to 8 tokens.
// Memory-bound on the weight read, which cuBLAS's general kernels serve at ~2.5 TB/s on an H200;
// here one warp streams one weight row with 16-byte loads (many in flight per lane) and keeps
// one partial sum per token, so every weight byte is read once for all tokens of the step.
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

constexpr int kWarps = 8;

template <int T, typename Out>
__global__ void __launch_bounds__(kWarps * 32) GemvKernel(const bf16* __restrict__ x, int64_t x_stride,
                                                          const bf16* __restrict__ w, int64_t n, int64_t k,
                                                          Out* __restrict__ out, int64_t out_stride) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const uint4* wrow = reinterpret_cast<const uint4*>(w + row * k);
  float acc[T];
#pragma unroll
  for (int t = 0; t < T; ++t) acc[t] = 0.0f;
  const int64_t vecs = k / 8;
#pragma unroll 4
  for (int64_t v = lane; v < vecs; v += 32) {
    const uint4 wv = __ldg(wrow + v);
    const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv);
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const uint4 xv = *reinterpret_cast<const uint4*>(x + t * x_stride + v * 8);
      const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 wf = __bfloat1622float2(wp[e]);
        const float2 xf = __bfloat1622float2(xp[e]);
        acc[t] += wf.x * xf.x + wf.y * xf.y;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < T; ++t) {
    float s = acc[t];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
      if constexpr (sizeof(Out) == 4) out[t * out_stride + row] = s;
      else out[t * out_stride + row] = __float2bfloat16(s);
    }
  }
}

template <typename Out>
cudaError_t Dispatch(const bf16* x, int64_t x_stride, int64_t rows, const bf16* w, int64_t n, int64_t k, Out* out,
                     int64_t out_stride, cudaStream_t stream) {
  const dim3 grid((n + kWarps - 1) / kWarps);
  switch (rows) {
#define KVS_GEMV_CASE(T) \
  case T: GemvKernel<T, Out><<<grid, kWarps * 32, 0, stream>>>(x, x_stride, w, n, k, out, out_stride); break;
    KVS_GEMV_CASE(1) KVS_GEMV_CASE(2) KVS_GEMV_CASE(3) KVS_GEMV_CASE(4)
    KVS_GEMV_CASE(5) KVS_GEMV_CASE(6) KVS_GEMV_CASE(7) KVS_GEMV_CASE(8)
#undef KVS_GEMV_CASE
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

bool GemvApplies(int64_t rows, int64_t k, int64_t x_stride, const void* x, const void* w) {
  return rows >= 1 && rows <= kMaxGemvRows && k % 8 == 0 && x_stride % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

cudaError_t LaunchGemv(const bf16* x, int64_t x_stride, int64_t rows, const bf16* w, int64_t n, int64_t k,
                       void* out, bool f32_out, int64_t out_stride, cudaStream_t stream) {
  if (f32_out) return Dispatch(x, x_stride, rows, w, n, k, static_cast<float*>(out), out_stride, stream);
  return Dispatch(x, x_stride, rows, w, n, k, static_cast<bf16*>(out), out_stride, stream);
}

}  // namespace kvs::cuda
