#include "runtime/engine/step_executor.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

absl::StatusOr<KvCapacity> PlanKvCapacity(Backend& backend, const ModelWeights& weights, const EngineConfig& config,
                                          const TensorParallel& tp) {
  KvCapacity cap;
  const ModelConfig& local = weights.local_config();
  const KvDType kv_dtype = config.kv_dtype.value_or(backend.DefaultKvDType());
  cap.bytes_per_block = KvCache::BytesPerBlock(local, kv_dtype, config.scheduler.block_size);
  // The offload tier first: its staging window (one layer of it, KvCache) is device memory.
  int64_t offload = KvCache::BlocksForBudget(local, kv_dtype, config.scheduler.block_size, config.kv_offload_bytes);
  if (tp.comm != nullptr) {
    KVS_ASSIGN_OR_RETURN(offload, tp.comm->AllReduceMin(offload));
  }
  if (config.kv_offload_bytes > 0 && offload == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--kv-offload-memory must hold at least one KV block (%d bytes)", cap.bytes_per_block));
  }
  size_t kv_bytes = config.kv_cache_bytes;
  if (kv_bytes == 0) {
    const size_t workspace =
        ModelRunner::WorkspaceBytes(weights, LimitsFor(config), tp.size()) +
        KvCache::StagingWindowBytes(local, kv_dtype, config.scheduler.block_size, static_cast<int32_t>(offload)) +
        KvCache::ResidualBytes(local, kv_dtype, config.scheduler.block_size, config.scheduler.max_seqs,
                               config.kv_residual_tokens, config.kv_sink);
    const size_t free = backend.FreeMemoryBytes();
    kv_bytes = free <= workspace ? 0 : static_cast<size_t>((free - workspace) * config.memory_fraction);
  }
  cap.local_blocks = KvCache::BlocksForBudget(local, kv_dtype, config.scheduler.block_size, kv_bytes);
  cap.blocks = cap.local_blocks;
  if (tp.comm != nullptr) {
    KVS_ASSIGN_OR_RETURN(int64_t group_min, tp.comm->AllReduceMin(cap.local_blocks));
    cap.blocks = static_cast<int32_t>(group_min);
  }
  if (cap.blocks <= 0) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("no memory is left for the KV cache after the weights and step workspace (%s)",
                        tp.comm ? "on at least one rank of the group" : "this device"));
  }
  cap.offload_blocks = static_cast<int32_t>(std::min<int64_t>(offload, (int64_t{1} << 30) - cap.blocks));
  return cap;
}

absl::StatusOr<int32_t> AddSwapSpace(Backend& backend, const EngineConfig& config, const TensorParallel& tp,
                                     KvCache& cache) {
  // The same host block count on every rank of a group (the minimum).
  int64_t host_blocks = static_cast<int64_t>(config.swap_space_bytes / cache.bytes_per_block());
  if (config.preemption_mode == PreemptionMode::kRecompute) host_blocks = 0;
  host_blocks = std::min<int64_t>(host_blocks, 1 << 30);
  if (tp.comm != nullptr) {
    KVS_ASSIGN_OR_RETURN(host_blocks, tp.comm->AllReduceMin(host_blocks));
  }
  if (config.preemption_mode == PreemptionMode::kSwap && host_blocks == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--preemption-mode swap needs --swap-space of at least one KV block (%d bytes)", cache.bytes_per_block()));
  }
  KVS_RETURN_IF_ERROR(cache.AddHostTier(backend, static_cast<int32_t>(host_blocks)));
  return static_cast<int32_t>(host_blocks);
}

absl::StatusOr<std::unique_ptr<StepExecutor>> StepExecutor::Create(Backend& backend, const ModelWeights& weights,
                                                                   const EngineConfig& config, TensorParallel tp) {
  std::unique_ptr<StepExecutor> x(new StepExecutor());
  x->tp_ = tp;
  KVS_ASSIGN_OR_RETURN(x->capacity_, PlanKvCapacity(backend, weights, config, tp));
  KVS_ASSIGN_OR_RETURN(
      x->cache_, KvCache::Create(backend, weights.local_config(), config.kv_dtype.value_or(backend.DefaultKvDType()),
                                 config.scheduler.block_size, x->capacity_.blocks, x->capacity_.offload_blocks));
  KVS_RETURN_IF_ERROR(
      x->cache_.AddResiduals(backend, config.scheduler.max_seqs, config.kv_residual_tokens, config.kv_sink));
  KVS_ASSIGN_OR_RETURN(ModelRunner runner, ModelRunner::Create(backend, weights, x->cache_, LimitsFor(config), tp));
  x->runner_ = std::make_unique<ModelRunner>(std::move(runner));
  KVS_ASSIGN_OR_RETURN(x->host_blocks_, AddSwapSpace(backend, config, tp, x->cache_));
  return x;
}

absl::StatusOr<ModelRunner::Output> StepExecutor::Run(const StepInput& input, bool greedy_only,
                                                      std::span<const SampleRequest> samples) {
  if (tp_.comm != nullptr) {
    if (stopped_) return absl::FailedPreconditionError("the engine's tensor-parallel group was shut down");
    KVS_RETURN_IF_ERROR(tp_.comm->SendStep(&input, greedy_only));
  }
  return runner_->Execute(input, greedy_only, samples);
}

absl::Status StepExecutor::RunReceived(const StepInput& input, bool greedy_only) {
  return runner_->Execute(input, greedy_only).status();
}

absl::Status StepExecutor::Stop() {
  if (tp_.comm == nullptr || stopped_) return absl::OkStatus();
  stopped_ = true;
  return tp_.comm->SendStep(nullptr, false);
}

}  // namespace kvs
