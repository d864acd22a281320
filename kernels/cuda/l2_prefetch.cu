// CudaBackend::PrefetchWeights' kernel: bulk L2 prefetches of a weight range, issued from a few
// SMs on a stream of their own while the decode step's small kernels leave the memory idle.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kernel_choice.h"

namespace kvs::cuda {
namespace {

// Bytes one cp.async.bulk.prefetch asks for; a warp of such a block, 32 pieces in flight, spread
// over up to kMaxBlocks SMs so that no SM's copy engine carries the range alone.
constexpr int64_t kPiece = int64_t{1} << 14;
constexpr int kThreadsPerBlock = 32;
constexpr int kMaxBlocks = 64;

KernelChoice g_prefetch_o("KVS_L2_PREFETCH", "o");  // alternative: the runner's hints are taken

__global__ void PrefetchL2Kernel(const char* data, int64_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * kPiece;
  for (int64_t off = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kPiece; off < bytes; off += step) {
    const auto n = static_cast<uint32_t>(min(kPiece, bytes - off) & ~int64_t{15});  // whole 16-byte pieces
    if (n > 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(data + off), "r"(n) : "memory");
  }
#endif
}

}  // namespace

bool L2PrefetchChoice() { return g_prefetch_o.Alternative(); }

cudaError_t LaunchPrefetchL2(const void* data, int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0 || reinterpret_cast<uintptr_t>(data) % 16 != 0) return cudaSuccess;  // a hint: nothing to do
  const int64_t pieces = (bytes + kPiece - 1) / kPiece;
  const int blocks =
      static_cast<int>(std::min<int64_t>(kMaxBlocks, (pieces + kThreadsPerBlock - 1) / kThreadsPerBlock));
  PrefetchL2Kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<const char*>(data), bytes);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
