// Chooses and creates a Backend by name: "cpu" (weights in their GGML blocks, int8 dot products),
// "cpu-reference" (the float32 oracle), "cuda" (the GPU given by `local_rank`), or "auto" (CUDA
// when a GPU is visible, else "cpu").
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace kvs {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int local_rank,
                                                       size_t cpu_memory_budget);
// Whether this build has the CUDA backend and a GPU is visible.
bool CudaAvailable();

// The CPU backend's settings, for callers that see backends only through this factory.
// A memory budget for it: half of physical memory.
size_t DefaultCpuMemoryBudget();
// Threads its kernels use (0: the default, cores / ranks on the node; kernels/common/thread_pool.h).
void SetCpuBackendThreads(int threads);
// "N threads, <weights>; dot kernels <set>" for the start-up log (`reference`: --device cpu-reference).
std::string CpuBackendSummary(bool reference);

}  // namespace kvs
