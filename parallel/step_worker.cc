#include "parallel/step_worker.h"

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
  KVS_ASSIGN_OR_RETURN(w->executor_, StepExecutor::Create(backend, weights, config, tp));
  return w;
}

absl::StatusOr<int64_t> StepWorker::Run() {
  StepInput input;
  bool greedy_only = false;
  int64_t steps = 0;
  for (;;) {
    KVS_ASSIGN_OR_RETURN(StepCommand command, tp_.comm->ReceiveStep(input, greedy_only));
    if (command == StepCommand::kStop) return steps;
    KVS_RETURN_IF_ERROR(executor_->RunReceived(input, greedy_only));
    ++steps;
  }
}

}  // namespace kvs
