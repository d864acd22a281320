// What an engine is asked to be: the batch limits, the KV cache's size and format, host tiers,
// preemption and the switches benchmarks compare. Set from flags (launcher/engine_flags.h) or by
// a caller; resolved against the model (ResolveEngineConfig) before anything is sized from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "kernels/common/kv_format.h"
#include "runtime/engine/model_runner.h"
#include "runtime/model/model_config.h"
#include "runtime/sched/preemption.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

// KIVI's full-precision window: the newest 128 tokens of a sequence stay in bf16 with the
// channel-quantized KV formats (int4 / int2), rounded up to whole blocks (KvGroups::RingBlocks).
inline constexpr int32_t kDefaultKvResidualTokens = 128;

struct EngineConfig {
  // The scheduler's choices (block size, batch limits, max_model_len — 0: the model's own limit —,
  // the paging baseline, prefix caching). The engine starts its Scheduler from these and adds what
  // it measures at start-up (KV capacity, swap and offload tiers, preemption costs).
  SchedulerConfig scheduler;
  size_t kv_cache_bytes = 0;        // 0: memory_fraction of what is free after weights + workspace
  std::optional<KvDType> kv_dtype;  // KV cache element format; unset: the backend's default
  int32_t kv_residual_tokens = kDefaultKvResidualTokens;  // int4 / int2: newest tokens kept in bf16
  // int4 / int2 with a ring: each sequence's first block kept in bf16 too (KvResidualRing's sink).
  bool kv_sink = true;
  double memory_fraction = 0.9;
  size_t swap_space_bytes = 0;  // host memory for swapped-out KV blocks (per rank)
  size_t kv_offload_bytes = 0;  // host memory extending the cache for over-long sequences (per rank)
  PreemptionMode preemption_mode = PreemptionMode::kAuto;
  bool enforce_eager = false;    // never replay decode steps as recorded (CUDA) graphs
  bool overlap_kv_moves = true;  // KV block moves beside the ops (RunnerLimits)
  absl::Status Validate() const;
};

// `config` with max_model_len resolved against the model and checked.
absl::StatusOr<EngineConfig> ResolveEngineConfig(EngineConfig config, const ModelConfig& model);
RunnerLimits LimitsFor(const EngineConfig& resolved);

}  // namespace kvs
