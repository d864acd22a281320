// RMSNorm over f32 rows (the residual stream), optionally adding a bf16 update first.
// One block per row, float4 loads, and the row held in registers between the sum-of-squares pass
// and the scaling pass (no second read). Decode has one row per step, so a row must finish fast on
// its own: 512 threads, two float4 a thread at 4,096 columns. A prompt's thousands of rows may
// want bytes in flight instead (the norms ran at 61% of copy in a 65K prompt): a row there takes
// the fewest threads whose registers hold it (128 at 4,096 columns, eight float4 a thread), so more
// rows are resident and each thread's loads are all issued before the first returns (RowThreads;
// the 65K prompt 0.5-0.9% faster on an H100; KVS_NORM_ROW_THREADS=512 keeps 512). Rows too wide
// for the registers, or unaligned, take a scalar loop.
// The vector kernel can also round its output for the block GEMV that reads it next
// (activation_rounding.cuh), from the bf16 values it stores: the same bytes the rounding kernel
// would write, one launch fewer.
#include "kernels/cuda/activation_rounding.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kernel_choice.h"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 512;        // a block's threads at few rows, and the scalar kernel's
constexpr int kMaxVecPerThread = 8;  // rows up to 512 * 8 * 4 = 16384 floats stay in registers
// Rows from which the fewest threads that hold a row may be taken (RowThreads): a decode step's
// batch below it keeps the 512 threads its latency was measured with.
constexpr int64_t kManyRows = 256;
KernelChoice g_always_512_threads("KVS_NORM_ROW_THREADS", "512");  // alternative: 512 at every row count

template <int kBlockThreads>
__device__ float BlockSum(float v) {
  __shared__ float partial[kBlockThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kBlockThreads / 32; ++w) total += partial[w];
  return total;
}

__device__ inline float4 LoadBf16x4(const bf16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

// Stores v rounded to bf16 and returns what it stored.
__device__ inline float4 StoreBf16x4(bf16* p, float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 raw;
  raw.x = *reinterpret_cast<const uint32_t*>(&a);
  raw.y = *reinterpret_cast<const uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = raw;
  const float2 lo = __bfloat1622float2(a), hi = __bfloat1622float2(b);
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

template <bool kAdd, int kBlockThreads>
__global__ void __launch_bounds__(kBlockThreads)
    RmsNormVecKernel(float* x, int64_t x_stride, const bf16* update, int64_t update_stride, const bf16* w, int64_t cols,
                     float eps, bf16* out, int64_t out_stride, QuantizedActivations round) {
  const int64_t vecs = cols / 4;
  // The norm's weights before the wait for the previous kernel (pdl.cuh): no step writes them, and
  // their load then overlaps the previous kernel's tail instead of following the sum's.
  uint2 g_raw[kMaxVecPerThread];
#pragma unroll
  for (int j = 0; j < kMaxVecPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kBlockThreads;
    if (i < vecs) g_raw[j] = *reinterpret_cast<const uint2*>(w + 4 * i);
  }
  pdl::StartAfterPrevious();
  const int64_t r = blockIdx.x;
  float* xr = x + r * x_stride;
  float4 v[kMaxVecPerThread];
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxVecPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kBlockThreads;
    if (i < vecs) {
      float4 a = reinterpret_cast<const float4*>(xr)[i];
      if constexpr (kAdd) {
        const float4 u = LoadBf16x4(update + r * update_stride + 4 * i);
        a = make_float4(a.x + u.x, a.y + u.y, a.z + u.z, a.w + u.w);
        reinterpret_cast<float4*>(xr)[i] = a;
      }
      v[j] = a;
      sum_sq += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
    }
  }
  const float inv_rms = rsqrtf(BlockSum<kBlockThreads>(sum_sq) / static_cast<float>(cols) + eps);
#pragma unroll
  for (int j = 0; j < kMaxVecPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kBlockThreads;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i < vecs) {
      const float4 g = LoadBf16x4(reinterpret_cast<const bf16*>(&g_raw[j]));
      o = StoreBf16x4(out + r * out_stride + 4 * i, make_float4(v[j].x * inv_rms * g.x, v[j].y * inv_rms * g.y,
                                                                v[j].z * inv_rms * g.z, v[j].w * inv_rms * g.w));
    }
    // Eight lanes a unit of 32 (cols a multiple of 32: a unit's lanes are all in or all out); every
    // lane takes part in the shuffles. j * kBlockThreads is past the row for the whole block from
    // some j on.
    if (round.q != nullptr && static_cast<int64_t>(j) * kBlockThreads < vecs) {
      const float e[4] = {o.x, o.y, o.z, o.w};
      rounding::RoundUnit<4>(e, i < vecs, r, static_cast<int>(i / 8), static_cast<int>(cols / 32), round, true);
    }
  }
}

template <bool kAdd>
__global__ void __launch_bounds__(kThreads) RmsNormKernel(float* x, int64_t x_stride, const bf16* update,
                                                          int64_t update_stride, const bf16* w, int64_t cols,
                                                          float eps, bf16* out, int64_t out_stride) {
  pdl::StartAfterPrevious();
  const int64_t r = blockIdx.x;
  float* xr = x + r * x_stride;
  float sum_sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    float v = xr[c];
    if constexpr (kAdd) {
      v += __bfloat162float(update[r * update_stride + c]);
      xr[c] = v;
    }
    sum_sq += v * v;
  }
  const float inv_rms = rsqrtf(BlockSum<kThreads>(sum_sq) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    out[r * out_stride + c] = __float2bfloat16(xr[c] * inv_rms * __bfloat162float(w[c]));
  }
}

bool Vectorizable(int64_t cols, int64_t x_stride, int64_t update_stride, int64_t out_stride, const void* x,
                  const void* update, const void* w, const void* out) {
  auto aligned = [](const void* p, int a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  return cols % 4 == 0 && cols / 4 <= static_cast<int64_t>(kThreads) * kMaxVecPerThread && x_stride % 4 == 0 &&
         update_stride % 4 == 0 && out_stride % 4 == 0 && aligned(x, 16) && aligned(update, 8) && aligned(w, 8) &&
         aligned(out, 8);
}

// The vector kernel's threads a row: 512, but from kManyRows rows (unless SetNormRowThreadsFewest
// said otherwise) the fewest of 128 / 256 / 512 whose kMaxVecPerThread float4s a thread hold the
// row's cols / 4: a prompt's norm with 512 threads a row fits one block an SM at 73-78 registers
// and ran at 61% of the copy rate.
int RowThreads(int64_t rows, int64_t cols) {
  if (rows < kManyRows || g_always_512_threads.Alternative()) return kThreads;
  for (const int threads : {128, 256}) {
    if (cols / 4 <= static_cast<int64_t>(threads) * kMaxVecPerThread) return threads;
  }
  return kThreads;
}

template <bool kAdd>
cudaError_t LaunchNorm(float* x, int64_t x_stride, const bf16* update, int64_t update_stride, const bf16* w,
                       int64_t rows, int64_t cols, float eps, bf16* out, int64_t out_stride,
                       const QuantizedActivations* round, bool* rounded, cudaStream_t stream) {
  if (rounded != nullptr) *rounded = false;
  if (rows == 0) return cudaSuccess;
  if (!Vectorizable(cols, x_stride, update_stride, out_stride, x, update, w, out)) {
    return pdl::Launch(RmsNormKernel<kAdd>, static_cast<unsigned>(rows), kThreads, 0, stream, x, x_stride, update,
                       update_stride, w, cols, eps, out, out_stride);
  }
  const bool rounds = round != nullptr && cols % 32 == 0;
  const QuantizedActivations rounding_to = rounds ? *round : QuantizedActivations{};
  auto launch = [&](auto kernel, int threads) {
    return pdl::Launch(kernel, static_cast<unsigned>(rows), threads, 0, stream, x, x_stride, update, update_stride, w,
                       cols, eps, out, out_stride, rounding_to);
  };
  const int threads = RowThreads(rows, cols);
  const cudaError_t err = threads == 128   ? launch(RmsNormVecKernel<kAdd, 128>, 128)
                          : threads == 256 ? launch(RmsNormVecKernel<kAdd, 256>, 256)
                                           : launch(RmsNormVecKernel<kAdd, kThreads>, kThreads);
  if (rounded != nullptr) *rounded = rounds && err == cudaSuccess;
  return err;
}

// One warp per row of `dim` bf16 (a head, or a whole bf16 row): sum of squares in float32,
// the row read twice (it is in L1 the second time).
__global__ void RmsNormBf16Kernel(const bf16* x, int64_t x_stride, int64_t rows, int32_t heads, int32_t dim,
                                  const bf16* w, float eps, bf16* out, int64_t out_stride) {
  pdl::StartAfterPrevious();
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows * heads) return;
  const int lane = threadIdx.x & 31;
  const int64_t t = row / heads, h = row % heads;
  const bf16* xr = x + t * x_stride + h * dim;
  bf16* o = out + t * out_stride + h * dim;
  float sum_sq = 0.0f;
  for (int c = lane; c < dim; c += 32) {
    const float v = __bfloat162float(xr[c]);
    sum_sq += v * v;
  }
  for (int off = 16; off > 0; off >>= 1) sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, off);
  const float inv_rms = rsqrtf(sum_sq / static_cast<float>(dim) + eps);
  // In place is safe: each lane rewrites only the elements it read.
  for (int c = lane; c < dim; c += 32) o[c] = __float2bfloat16(__bfloat162float(xr[c]) * inv_rms * __bfloat162float(w[c]));
}

}  // namespace

void SetNormRowThreadsFewest(bool fewest) { g_always_512_threads.Set(!fewest); }
void ResetNormRowThreads() { g_always_512_threads.Reset(); }

cudaError_t LaunchRmsNormBf16(const bf16* x, int64_t x_stride, int64_t rows, int32_t heads, int32_t dim,
                              const bf16* w, float eps, bf16* out, int64_t out_stride, cudaStream_t stream) {
  const int64_t n = rows * heads;
  if (n == 0) return cudaSuccess;
  constexpr int kWarps = 8;
  return pdl::Launch(RmsNormBf16Kernel, static_cast<unsigned>((n + kWarps - 1) / kWarps), kWarps * 32, 0, stream, x,
                     x_stride, rows, heads, dim, w, eps, out, out_stride);
}

cudaError_t LaunchRmsNorm(const float* x, int64_t x_stride, const bf16* w, int64_t rows, int64_t cols, float eps,
                          bf16* out, int64_t out_stride, cudaStream_t stream, const QuantizedActivations* round,
                          bool* rounded) {
  return LaunchNorm<false>(const_cast<float*>(x), x_stride, nullptr, 0, w, rows, cols, eps, out, out_stride, round,
                           rounded, stream);
}

cudaError_t LaunchAddRmsNorm(float* residual, int64_t res_stride, const bf16* x, int64_t x_stride, const bf16* w,
                             int64_t rows, int64_t cols, float eps, bf16* out, int64_t out_stride, cudaStream_t stream,
                             const QuantizedActivations* round, bool* rounded) {
  return LaunchNorm<true>(residual, res_stride, x, x_stride, w, rows, cols, eps, out, out_stride, round, rounded,
                          stream);
}

}  // namespace kvs::cuda
