// One rank's share of running steps: its KV cache, sized by the capacity its tensor-parallel
// group agrees on, and its model runner. Rank 0's Engine and the other ranks' StepWorker
// (parallel/step_worker.h) both build theirs here, so the two sides of a group make the set-up's
// collectives (capacity, swap space) in the same order, and run each step by the same code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/engine/collectives.h"
#include "runtime/engine/engine_config.h"
#include "runtime/engine/model_runner.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/model/model_weights.h"

namespace kvs {

// How much KV cache one rank of a group gets, measured at start-up.
struct KvCapacity {
  int32_t local_blocks = 0;    // what fits on this rank after its weights and step workspace
  int32_t blocks = 0;          // the group's: the minimum over its ranks (every rank holds each block)
  size_t bytes_per_block = 0;  // on this rank, for its KV heads
  int32_t offload_blocks = 0;  // the group's blocks in host memory past the device's (kv_offload_bytes)
};

// Measures this rank's KV capacity and agrees the group's with the other ranks (a collective
// call when tp.comm is set: every rank of the group must make it).
absl::StatusOr<KvCapacity> PlanKvCapacity(Backend& backend, const ModelWeights& weights, const EngineConfig& resolved,
                                          const TensorParallel& tp);
// The swap space in host blocks, agreed by the group (collective when tp.comm is set), and
// added to `cache` as its host tier.
absl::StatusOr<int32_t> AddSwapSpace(Backend& backend, const EngineConfig& resolved, const TensorParallel& tp,
                                     KvCache& cache);

class StepExecutor {
 public:
  // Collective over the group when tp.comm is set; `resolved`: ResolveEngineConfig's, equal on
  // every rank of the group.
  static absl::StatusOr<std::unique_ptr<StepExecutor>> Create(Backend& backend, const ModelWeights& weights,
                                                              const EngineConfig& resolved, TensorParallel tp);
  // Rank 0: sends `input` to the group's other ranks (tp > 1), then runs it here.
  absl::StatusOr<ModelRunner::Output> Run(const StepInput& input, bool greedy_only,
                                          std::span<const SampleRequest> samples = {});
  // The other ranks: runs a step that rank 0 sent.
  absl::Status RunReceived(const StepInput& input, bool greedy_only);
  // Rank 0: tells the group's other ranks to stop (no-op at tp = 1). Idempotent; Run fails after.
  absl::Status Stop();

  KvCache& cache() { return cache_; }
  const KvCache& cache() const { return cache_; }
  const KvCapacity& capacity() const { return capacity_; }
  ModelRunner& runner() { return *runner_; }
  const ModelRunner& runner() const { return *runner_; }
  int32_t host_blocks() const { return host_blocks_; }  // the swap space AddSwapSpace agreed
  const TensorParallel& tp() const { return tp_; }

 private:
  StepExecutor() = default;
  TensorParallel tp_;
  KvCapacity capacity_;
  KvCache cache_;
  std::unique_ptr<ModelRunner> runner_;
  int32_t host_blocks_ = 0;
  bool stopped_ = false;
};

}  // namespace kvs
