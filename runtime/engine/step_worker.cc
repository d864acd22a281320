#include "runtime/engine/step_worker.h"


#include "kernels/common/status_macros.h"

namespace kvs {

absl::StatusOr<std::unique_ptr<StepWorker>> StepWorker::Create(Backend& backend, const ModelWeights& weights,
                                                              EngineConfig config, TensorParallel tp) {
  if (tp.comm == nullptr || tp.rank() == 0) {
    return absl::InvalidArgumentError("a StepWorker is a tensor-parallel rank other than 0");
  }
  KVS_ASSIGN_OR_RETURN(config, ResolveEngineConfig(config, weights.config()));
  std::unique_ptr<StepWorker> w(new StepWorker());
  w->tp_ = tp;
  KVS_ASSIGN_OR_RETURN(w->capacity_, PlanKvCapacity(backend, weights, config, tp));
  KVS_ASSIGN_OR_RETURN(w->cache_, KvCache::Create(backend, weights.local_config(),
                                                  config.kv_dtype.value_or(backend.DefaultKvDType()), config.block_size,
                                                  w->capacity_.blocks, w->capacity_.offload_blocks));
  KVS_RETURN_IF_ERROR(w->cache_.AddResiduals(backend, config.max_seqs));  // as the leader's (Engine::Create)
  KVS_ASSIGN_OR_RETURN(ModelRunner runner, ModelRunner::Create(backend, weights, w->cache_, LimitsFor(config), tp));
  w->runner_ = std::make_unique<ModelRunner>(std::move(runner));
  KVS_RETURN_IF_ERROR(AddSwapSpace(backend, config, tp, w->cache_).status());
  return w;
}

absl::StatusOr<int64_t> StepWorker::Run() {
  std::vector<int32_t> words;
  StepInput input;
  bool greedy_only = false;
  int64_t steps = 0;
  for (;;) {
    KVS_RETURN_IF_ERROR(tp_.comm->Broadcast(words));
    KVS_ASSIGN_OR_RETURN(StepCommand command, DecodeStep(words, input, greedy_only));
    if (command == StepCommand::kStop) return steps;
    KVS_RETURN_IF_ERROR(runner_->Execute(input, greedy_only).status());
    ++steps;
  }
}

}  // namespace kvs
