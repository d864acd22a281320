#include "launcher/engine_flags.h"

#include <algorithm>

#include "absl/flags/flag.h"
#include "kernels/backend_factory.h"
#include "kernels/common/status_macros.h"
#include "launcher/byte_size.h"
#include "launcher/flags.h"
#include "runtime/engine/capacity_plan.h"

namespace kvs {

absl::StatusOr<EngineConfig> EngineConfigFromFlags(const Backend& backend) {
  return EngineConfigFromFlags(backend.Name() == "cpu");
}

absl::StatusOr<SamplingParams> SamplingParamsFromFlags() {
  SamplingParams p;
  p.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  p.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  p.top_k = absl::GetFlag(FLAGS_top_k);
  p.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  p.seed = absl::GetFlag(FLAGS_seed);
  p.stop = absl::GetFlag(FLAGS_stop);
  p.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  KVS_RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::StatusOr<KvDType> KvDTypeFromFlags(const Backend& backend) {
  const std::string kv = absl::GetFlag(FLAGS_kv_dtype);
  if (kv.empty()) return backend.DefaultKvDType();
  return ParseKvDType(kv);
}

absl::StatusOr<EngineConfig> EngineConfigFromFlags(bool cpu) {
  EngineConfig c;
  c.scheduler.block_size = absl::GetFlag(FLAGS_block_size);
  c.scheduler.max_seqs = absl::GetFlag(FLAGS_max_seqs);
  c.scheduler.max_tokens_per_step = absl::GetFlag(FLAGS_max_tokens_per_step);
  c.scheduler.max_model_len = absl::GetFlag(FLAGS_max_model_len);
  c.memory_fraction = absl::GetFlag(FLAGS_memory_fraction);
  c.scheduler.prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
  c.enforce_eager = absl::GetFlag(FLAGS_enforce_eager);
  c.overlap_kv_moves = absl::GetFlag(FLAGS_overlap_kv_moves);
  if (const std::string kv = absl::GetFlag(FLAGS_kv_cache_memory); !kv.empty()) {
    KVS_ASSIGN_OR_RETURN(c.kv_cache_bytes, ParseByteSize(kv));
  } else if (cpu) {
    c.kv_cache_bytes = size_t{1} << 30;
  }
  if (const std::string swap = absl::GetFlag(FLAGS_swap_space); !swap.empty()) {
    KVS_ASSIGN_OR_RETURN(c.swap_space_bytes, ParseByteSize(swap));
  } else if (!cpu) {
    c.swap_space_bytes = size_t{4} << 30;
  }
  if (const std::string off = absl::GetFlag(FLAGS_kv_offload_memory); !off.empty()) {
    auto bytes = ParseByteSize(off);
    if (!bytes.ok()) return absl::InvalidArgumentError("--kv-offload-memory: " + std::string(bytes.status().message()));
    c.kv_offload_bytes = *bytes;
  }
  if (const std::string kv = absl::GetFlag(FLAGS_kv_dtype); !kv.empty()) {
    KVS_ASSIGN_OR_RETURN(c.kv_dtype, ParseKvDType(kv));
  }
  c.kv_residual_tokens = absl::GetFlag(FLAGS_kv_residual_tokens);
  c.kv_sink = absl::GetFlag(FLAGS_kv_sink);
  KVS_ASSIGN_OR_RETURN(c.preemption_mode, ParsePreemptionMode(absl::GetFlag(FLAGS_preemption_mode)));
  KVS_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<std::unique_ptr<Backend>> RankBackend(int local_rank, int ranks) {
  return CreateBackend(absl::GetFlag(FLAGS_device), local_rank, DefaultCpuMemoryBudget() / std::max(ranks, 1));
}

absl::StatusOr<std::unique_ptr<Backend>> SingleProcessBackend() { return RankBackend(0, 1); }

}  // namespace kvs
