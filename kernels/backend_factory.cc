#include "kernels/backend_factory.h"

#include "absl/strings/str_format.h"
#include "kernels/common/thread_pool.h"
#include "kernels/cpu/block_matmul.h"
#include "kernels/cpu/cpu_backend.h"
#if KVS_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace kvs {

bool CudaAvailable() {
#if KVS_HAVE_CUDA
  return CudaDeviceCount() > 0;
#else
  return false;
#endif
}

void SetCpuBackendThreads(int threads) { SetCpuThreads(threads); }

std::string CpuBackendSummary(bool reference) {
  return absl::StrFormat("%d threads, %s; dot kernels %s", CpuThreads(),
                         reference ? "float32 reference" : "weights in their GGUF blocks", cpu::BlockDotKernelName());
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int local_rank,
                                                       size_t cpu_memory_budget) {
  const std::string chosen = device == "auto" ? (CudaAvailable() ? "cuda" : "cpu") : device;
  if (chosen == "cpu") return std::unique_ptr<Backend>(new CpuBackend(cpu_memory_budget, CpuMath::kFast));
  if (chosen == "cpu-reference") return std::unique_ptr<Backend>(new CpuBackend(cpu_memory_budget, CpuMath::kReference));
  if (chosen == "cuda") {
#if KVS_HAVE_CUDA
    const int n = CudaDeviceCount();
    if (n == 0) return absl::FailedPreconditionError("--device=cuda: no CUDA device is visible");
    auto b = CudaBackend::Create(local_rank % n);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(std::move(*b));
#else
    return absl::FailedPreconditionError("--device=cuda: this build has no CUDA backend (nvcc was not found)");
#endif
  }
  return absl::InvalidArgumentError(absl::StrFormat("--device must be cpu, cpu-reference, cuda or auto, got '%s'", device));
}

}  // namespace kvs
