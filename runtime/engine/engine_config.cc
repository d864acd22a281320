#include "runtime/engine/engine_config.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

absl::Status EngineConfig::Validate() const {
  if (block_size < 1 || block_size > 1024) {
    return absl::InvalidArgumentError(absl::StrFormat("--block-size must be in 1..1024, got %d", block_size));
  }
  if (max_seqs < 1) return absl::InvalidArgumentError(absl::StrFormat("--max-seqs must be >= 1, got %d", max_seqs));
  if (max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--max-tokens-per-step must be >= 1, got %d", max_tokens_per_step));
  }
  if (max_model_len < 0) return absl::InvalidArgumentError("--max-model-len must be >= 0");
  if (!(memory_fraction > 0.0 && memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("--memory-fraction must be in (0, 1], got %g", memory_fraction));
  }
  return absl::OkStatus();
}

absl::StatusOr<EngineConfig> ResolveEngineConfig(EngineConfig config, const ModelConfig& mc) {
  KVS_RETURN_IF_ERROR(config.Validate());
  if (config.max_model_len > mc.MaxContext()) {
    return absl::InvalidArgumentError(absl::StrFormat("--max-model-len %d exceeds the model's context of %d tokens",
                                                      config.max_model_len, mc.MaxContext()));
  }
  if (config.max_model_len == 0) config.max_model_len = mc.MaxContext();
  config.max_seqs = std::min(config.max_seqs, config.max_tokens_per_step);
  return config;
}

RunnerLimits LimitsFor(const EngineConfig& c) {
  return RunnerLimits{c.max_tokens_per_step, c.max_seqs, (c.max_model_len + c.block_size - 1) / c.block_size,
                      !c.enforce_eager, c.overlap_kv_moves};
}

}  // namespace kvs
