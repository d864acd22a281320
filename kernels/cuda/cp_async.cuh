// Asynchronous global -> shared copies (cp.async, sm_80+), shared by the kernels that stage tiles
// while they compute (attention, the block GEMM). `valid` false zero-fills the destination
// (src-size 0) without reading the source.
#pragma once

#include <cuda_runtime.h>

namespace kvs::cuda {

// cp.async of 4, 8 or 16 bytes (16: bypassing L1).
template <int N>
__device__ inline void CopyAsyncN(void* smem, const void* gmem, bool valid) {
  static_assert(N == 4 || N == 8 || N == 16, "cp.async copies 4, 8 or 16 bytes");
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if constexpr (N == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem), "r"(valid ? 16 : 0));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(addr), "l"(gmem), "n"(N), "r"(valid ? N : 0));
  }
}
__device__ inline void CopyAsync16(void* smem, const void* gmem, bool valid) { CopyAsyncN<16>(smem, gmem, valid); }
__device__ inline void CopyAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
// Until at most N committed groups are pending.
template <int N>
__device__ inline void CopyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// Until every copy this thread issued has landed, committed or not.
__device__ inline void CopyAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

}  // namespace kvs::cuda
