#include "runtime/engine/engine_config.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

absl::Status EngineConfig::Validate() const {
  if (scheduler.block_size < 1 || scheduler.block_size > 1024) {
    return absl::InvalidArgumentError(absl::StrFormat("--block-size must be in 1..1024, got %d", scheduler.block_size));
  }
  if (scheduler.max_seqs < 1)
    return absl::InvalidArgumentError(absl::StrFormat("--max-seqs must be >= 1, got %d", scheduler.max_seqs));
  if (scheduler.max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--max-tokens-per-step must be >= 1, got %d", scheduler.max_tokens_per_step));
  }
  if (scheduler.max_model_len < 0) return absl::InvalidArgumentError("--max-model-len must be >= 0");
  if (kv_residual_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("--kv-residual-tokens must be >= 0, got %d", kv_residual_tokens));
  }
  if (!(memory_fraction > 0.0 && memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("--memory-fraction must be in (0, 1], got %g", memory_fraction));
  }
  return absl::OkStatus();
}

absl::StatusOr<EngineConfig> ResolveEngineConfig(EngineConfig config, const ModelConfig& mc) {
  KVS_RETURN_IF_ERROR(config.Validate());
  if (config.scheduler.max_model_len > mc.MaxContext()) {
    return absl::InvalidArgumentError(absl::StrFormat("--max-model-len %d exceeds the model's context of %d tokens",
                                                      config.scheduler.max_model_len, mc.MaxContext()));
  }
  if (config.scheduler.max_model_len == 0) config.scheduler.max_model_len = mc.MaxContext();
  config.scheduler.max_seqs = std::min(config.scheduler.max_seqs, config.scheduler.max_tokens_per_step);
  return config;
}

RunnerLimits LimitsFor(const EngineConfig& c) {
  return RunnerLimits{c.scheduler.max_tokens_per_step, c.scheduler.max_seqs,
                      (c.scheduler.max_model_len + c.scheduler.block_size - 1) / c.scheduler.block_size,
                      !c.enforce_eager, c.overlap_kv_moves};
}

}  // namespace kvs
