#include <cuda_bf16.h>

#include "parallel/peer_all_reduce_kernels.cuh"

namespace kvs::peer {
namespace {

__device__ __forceinline__ void StoreRelease(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t LoadAcquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t Now() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Every block of every rank reaches `epoch` before any passes. `failed` (shared) turns the
// block's later barriers into no-ops once a wait has timed out, so a dead peer costs one timeout.
__device__ void Barrier(const Peers& p, const Control& c, uint32_t epoch, int& failed) {
  __syncthreads();
  if (threadIdx.x < p.ranks) {
    __threadfence_system();
    StoreRelease(p.flags[threadIdx.x] + blockIdx.x * kMaxRanks + p.rank, epoch);
  }
  if (!failed) {
    for (int i = threadIdx.x; i < static_cast<int>(gridDim.x) * p.ranks; i += blockDim.x) {
      const uint32_t* f = p.flags[p.rank] + (i / p.ranks) * kMaxRanks + i % p.ranks;
      const uint64_t start = Now();
      while (static_cast<int32_t>(LoadAcquire(f) - epoch) < 0) {  // wrap-safe: epoch - announced > 0
        if (Now() - start > c.timeout_ns) {
          atomicCAS(c.error, -1, i % p.ranks);
          failed = 1;
          break;
        }
      }
    }
  }
  __syncthreads();
}

// 16-byte vectors of T summed over ranks in rank order (f32 accumulation).
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  static constexpr int kPer = 4;
  __device__ static uint4 Sum(const Peers& p, int64_t v) {
    float4 acc = make_float4(0, 0, 0, 0);
    for (int r = 0; r < p.ranks; ++r) {
      const float4 x = __ldcg(reinterpret_cast<const float4*>(p.data[r]) + v);
      acc.x += x.x;
      acc.y += x.y;
      acc.z += x.z;
      acc.w += x.w;
    }
    return *reinterpret_cast<uint4*>(&acc);
  }
  __device__ static float SumOne(const Peers& p, int64_t e) {
    float acc = 0.0f;
    for (int r = 0; r < p.ranks; ++r) acc += __ldcg(reinterpret_cast<const float*>(p.data[r]) + e);
    return acc;
  }
};
template <>
struct Vec<__nv_bfloat16> {
  static constexpr int kPer = 8;
  __device__ static uint4 Sum(const Peers& p, int64_t v) {
    float acc[8] = {};
    for (int r = 0; r < p.ranks; ++r) {
      const uint4 x = __ldcg(reinterpret_cast<const uint4*>(p.data[r]) + v);
      const uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        acc[2 * k] += __uint_as_float(w[k] << 16);
        acc[2 * k + 1] += __uint_as_float(w[k] & 0xFFFF0000u);
      }
    }
    uint32_t out[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const __nv_bfloat162 pair = __floats2bfloat162_rn(acc[2 * k], acc[2 * k + 1]);
      out[k] = *reinterpret_cast<const uint32_t*>(&pair);
    }
    return make_uint4(out[0], out[1], out[2], out[3]);
  }
  __device__ static __nv_bfloat16 SumOne(const Peers& p, int64_t e) {
    float acc = 0.0f;
    for (int r = 0; r < p.ranks; ++r) acc += __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p.data[r])[e]);
    return __float2bfloat16_rn(acc);
  }
};

// Stages x[0, n) into this rank's data area: 16-byte vectors [0, nv), elements past them singly.
template <typename T>
__device__ void Stage(const T* x, int64_t n, int64_t nv, const Peers& p, int64_t tid, int64_t stride) {
  constexpr int kPer = Vec<T>::kPer;
  T* mine = reinterpret_cast<T*>(p.data[p.rank]);
  for (int64_t v = tid; v < nv; v += stride) reinterpret_cast<uint4*>(mine)[v] = reinterpret_cast<const uint4*>(x)[v];
  for (int64_t e = nv * kPer + tid; e < n; e += stride) mine[e] = x[e];
}

template <typename T>
__global__ void __launch_bounds__(kThreads) AllReduceKernel(T* x, int64_t n, bool two_shot, Peers p, Control c) {
  constexpr int kPer = Vec<T>::kPer;
  __shared__ int failed;
  if (threadIdx.x == 0) failed = 0;
  uint32_t epoch = c.epochs[blockIdx.x];
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // 16-byte vectors where x allows them (the staging areas always do).
  const int64_t nv = reinterpret_cast<uintptr_t>(x) % 16 == 0 ? n / kPer : 0;
  Stage(x, n, nv, p, tid, stride);
  Barrier(p, c, ++epoch, failed);
  if (!two_shot) {
    for (int64_t v = tid; v < nv; v += stride) reinterpret_cast<uint4*>(x)[v] = Vec<T>::Sum(p, v);
  } else {
    // Rank r sums vectors [r nv / ranks, (r + 1) nv / ranks) into its result area; then each rank
    // copies the other slices from their owners.
    const int64_t lo = nv * p.rank / p.ranks, hi = nv * (p.rank + 1) / p.ranks;
    for (int64_t v = lo + tid; v < hi; v += stride) {
      const uint4 s = Vec<T>::Sum(p, v);
      reinterpret_cast<uint4*>(p.result[p.rank])[v] = s;
      reinterpret_cast<uint4*>(x)[v] = s;
    }
    Barrier(p, c, ++epoch, failed);
    for (int r = 0; r < p.ranks; ++r) {
      if (r == p.rank) continue;
      const int64_t rlo = nv * r / p.ranks, rhi = nv * (r + 1) / p.ranks;
      for (int64_t v = rlo + tid; v < rhi; v += stride) {
        reinterpret_cast<uint4*>(x)[v] = __ldcg(reinterpret_cast<const uint4*>(p.result[r]) + v);
      }
    }
  }
  for (int64_t e = nv * kPer + tid; e < n; e += stride) x[e] = Vec<T>::SumOne(p, e);  // the tail, summed by all
  // No rank restages into its data area (the next call) before every rank has read it.
  Barrier(p, c, ++epoch, failed);
  if (threadIdx.x == 0) c.epochs[blockIdx.x] = epoch;
}

__device__ __forceinline__ void UnpackBf16x8(const uint4 raw, float (&f)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    f[2 * k] = __uint_as_float(w[k] << 16);
    f[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
  }
}

__device__ float BlockSum(float v, float* partial) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) total += partial[i];
  __syncthreads();  // `partial` is reused by the next row
  return total;
}

// One block per row (rows strided over the fixed grid); each thread 8 columns at a time.
__global__ void __launch_bounds__(kThreads)
    AllReduceAddRmsNormKernel(const __nv_bfloat16* x, int64_t rows, int64_t cols, float* residual,
                              int64_t residual_stride, const __nv_bfloat16* w, float eps, __nv_bfloat16* out,
                              int64_t out_stride, Peers p, Control c) {
  __shared__ int failed;
  __shared__ float partial[kThreads / 32];
  if (threadIdx.x == 0) failed = 0;
  uint32_t epoch = c.epochs[blockIdx.x];
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n = rows * cols, nv = n / 8;
  Stage(x, n, nv, p, tid, stride);
  Barrier(p, c, ++epoch, failed);
  const int64_t row_vecs = cols / 8;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* res = residual + r * residual_stride;
    float sum_sq = 0.0f;
    for (int64_t v = threadIdx.x; v < row_vecs; v += blockDim.x) {
      float acc[8] = {};
      for (int k = 0; k < p.ranks; ++k) {  // rank order, as AllReduceKernel
        float f[8];
        UnpackBf16x8(__ldcg(reinterpret_cast<const uint4*>(p.data[k]) + r * row_vecs + v), f);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] += f[i];
      }
      float4* rv = reinterpret_cast<float4*>(res + 8 * v);
      float4 a = rv[0], b = rv[1];
      // The bf16 all-reduced value, as the unfused path adds it.
      a.x += __bfloat162float(__float2bfloat16_rn(acc[0]));
      a.y += __bfloat162float(__float2bfloat16_rn(acc[1]));
      a.z += __bfloat162float(__float2bfloat16_rn(acc[2]));
      a.w += __bfloat162float(__float2bfloat16_rn(acc[3]));
      b.x += __bfloat162float(__float2bfloat16_rn(acc[4]));
      b.y += __bfloat162float(__float2bfloat16_rn(acc[5]));
      b.z += __bfloat162float(__float2bfloat16_rn(acc[6]));
      b.w += __bfloat162float(__float2bfloat16_rn(acc[7]));
      rv[0] = a;
      rv[1] = b;
      sum_sq += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
    }
    const float inv_rms = rsqrtf(BlockSum(sum_sq, partial) / static_cast<float>(cols) + eps);
    for (int64_t v = threadIdx.x; v < row_vecs; v += blockDim.x) {  // this thread's own columns again
      const float4* rv = reinterpret_cast<const float4*>(res + 8 * v);
      const float4 a = rv[0], b = rv[1];
      float g[8];
      UnpackBf16x8(reinterpret_cast<const uint4*>(w)[v], g);
      const float y[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
      uint32_t packed[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const __nv_bfloat162 pair =
            __floats2bfloat162_rn(y[2 * k] * inv_rms * g[2 * k], y[2 * k + 1] * inv_rms * g[2 * k + 1]);
        packed[k] = *reinterpret_cast<const uint32_t*>(&pair);
      }
      reinterpret_cast<uint4*>(out + r * out_stride)[v] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
  }
  // No rank restages into its data area (the next call) before every rank has read it.
  Barrier(p, c, ++epoch, failed);
  if (threadIdx.x == 0) c.epochs[blockIdx.x] = epoch;
}

__global__ void __launch_bounds__(kThreads)
    AllGatherKernel(const uint8_t* send, uint8_t* recv, int64_t bytes, int64_t recv_stride, Peers p, Control c) {
  __shared__ int failed;
  if (threadIdx.x == 0) failed = 0;
  uint32_t epoch = c.epochs[blockIdx.x];
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const bool vec = reinterpret_cast<uintptr_t>(send) % 16 == 0 && reinterpret_cast<uintptr_t>(recv) % 16 == 0 &&
                   bytes % 16 == 0 && recv_stride % 16 == 0;
  const int64_t nv = vec ? bytes / 16 : 0;
  uint8_t* mine = reinterpret_cast<uint8_t*>(p.data[p.rank]);
  for (int64_t v = tid; v < nv; v += stride) reinterpret_cast<uint4*>(mine)[v] = reinterpret_cast<const uint4*>(send)[v];
  for (int64_t b = nv * 16 + tid; b < bytes; b += stride) mine[b] = send[b];
  Barrier(p, c, ++epoch, failed);
  for (int r = 0; r < p.ranks; ++r) {
    uint8_t* to = recv + r * recv_stride;
    const uint8_t* from = reinterpret_cast<const uint8_t*>(p.data[r]);
    for (int64_t v = tid; v < nv; v += stride) {
      reinterpret_cast<uint4*>(to)[v] = __ldcg(reinterpret_cast<const uint4*>(from) + v);
    }
    for (int64_t b = nv * 16 + tid; b < bytes; b += stride) to[b] = __ldcg(from + b);
  }
  Barrier(p, c, ++epoch, failed);
  if (threadIdx.x == 0) c.epochs[blockIdx.x] = epoch;
}

}  // namespace

cudaError_t LaunchPeerAllReduce(void* x, int64_t n, bool bf16, bool two_shot, const Peers& peers, const Control& c,
                                cudaStream_t stream) {
  if (bf16) {
    AllReduceKernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(x), n, two_shot, peers, c);
  } else {
    AllReduceKernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<float*>(x), n, two_shot, peers, c);
  }
  return cudaGetLastError();
}

cudaError_t LaunchPeerAllReduceAddRmsNorm(const void* x, int64_t rows, int64_t cols, float* residual,
                                          int64_t residual_stride, const void* w, float eps, void* out,
                                          int64_t out_stride, const Peers& peers, const Control& c,
                                          cudaStream_t stream) {
  AllReduceAddRmsNormKernel<<<kBlocks, kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), rows, cols, residual, residual_stride,
      static_cast<const __nv_bfloat16*>(w), eps, static_cast<__nv_bfloat16*>(out), out_stride, peers, c);
  return cudaGetLastError();
}

cudaError_t LaunchPeerAllGather(const void* send, void* recv, size_t bytes, size_t recv_stride, const Peers& peers,
                                const Control& c, cudaStream_t stream) {
  AllGatherKernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<const uint8_t*>(send), static_cast<uint8_t*>(recv),
                                                    static_cast<int64_t>(bytes), static_cast<int64_t>(recv_stride),
                                                    peers, c);
  return cudaGetLastError();
}

}  // namespace kvs::peer
