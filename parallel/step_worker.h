// A tensor-parallel rank other than its group's rank 0: it holds its shard's KV cache and runs
// each step rank 0 sends, taking part in the step's collectives, until told to stop. It has no
// scheduler, tokenizer or sampler: rank 0 decides everything and this rank only computes, with
// the same StepExecutor as rank 0's Engine.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/engine/collectives.h"
#include "runtime/engine/engine_config.h"
#include "runtime/engine/step_executor.h"
#include "runtime/model/model_weights.h"

namespace kvs {

class StepWorker {
 public:
  // Collective with rank 0's Engine::Create (the group agrees on the KV capacity): `config`
  // must equal rank 0's.
  static absl::StatusOr<std::unique_ptr<StepWorker>> Create(Backend& backend, const ModelWeights& weights,
                                                            EngineConfig config, TensorParallel tp);
  // Runs steps until rank 0's stop message; returns the number of steps run.
  absl::StatusOr<int64_t> Run();

  const KvCapacity& kv_capacity() const { return executor_->capacity(); }
  const KvCache& kv_cache() const { return executor_->cache(); }

 private:
  StepWorker() = default;
  TensorParallel tp_;
  std::unique_ptr<StepExecutor> executor_;
};

}  // namespace kvs
