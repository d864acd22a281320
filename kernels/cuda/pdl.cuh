// Programmatic dependent launch (Hopper and later): a kernel launched with it is scheduled while
// the kernel before it in the stream still runs, instead of after that kernel's last block has
// retired and the launch latency has passed. A batch-1 decode step is ~450 small kernels in a row
// (docs/performance.md, "Where a batch-1 step's time goes"), so these gaps are a large share of it.
//
// The contract, for every kernel launched through pdl::Launch:
//   - it calls WaitForPrevious() before it reads anything an earlier kernel wrote, and before it
//     writes anything an earlier kernel may still read — in every thread, before any early return
//     (the wait returns once the previous grid has finished and its writes are visible, which in
//     turn waited for its own predecessor: completion stays ordered along the stream);
//   - what it does before the wait touches only memory no kernel of the step writes (the weights:
//     the GEMVs prefetch theirs into L2 there; the step's metadata, copied before its first
//     kernel: rope.cu's kEarly takes its positions and KV slots there).
// AllowNext() lets the next kernel's blocks be scheduled before this one has finished (without it,
// they are scheduled as this kernel's blocks exit); it promises nothing about this kernel's writes.
// Kernels that are not launched through pdl::Launch may call both: without the launch attribute the
// wait returns at once. Every kernel calls the two through StartAfterPrevious(), below.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace kvs::cuda::pdl {

__device__ __forceinline__ void WaitForPrevious() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void AllowNext() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The start of every kernel launched through pdl::Launch: the wait for the previous kernel, then
// the next kernel's release. So kernel N+1 is launched once kernel N-1 has finished, and a chain
// of kernels overlaps one deep (a GEMV's weight prefetch before its wait covers the small kernel
// just ahead of it). Releasing before the wait — every kernel of a chain resident early, the O
// projection's GEMV waiting through rope, attention and the merge — made the H100's batch-1 step
// 14-16% slower (Q4_0 2.69 against ~2.36 ms, F8_E4M3 4.39 against ~3.77; docs/performance.md,
// "The twenty-sixth session's device call").
__device__ __forceinline__ void StartAfterPrevious() {
  WaitForPrevious();
  AllowNext();
}

// Starts moving the 128-byte line at `p` into L2 (no register waits on it).
__device__ __forceinline__ void PrefetchL2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Whether launches carry the attribute: the current device is compute capability 9.0 or later,
// the kernels were compiled for it (a kernel JIT-compiled from older PTX has no wait), and
// KVS_PDL is not "off" (measurement). Read once per process and device.
bool Enabled();

template <typename... Params, typename... Args>
cudaError_t Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = Enabled() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace kvs::cuda::pdl
