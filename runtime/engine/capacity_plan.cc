#include "runtime/engine/capacity_plan.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "runtime/engine/model_runner.h"
#include "runtime/model/model_weights.h"

namespace kvs {

absl::StatusOr<KvDType> ParseKvDType(const std::string& s) {
  if (s == "f32") return KvDType::kF32;
  if (s == "bf16") return KvDType::kBF16;
  if (s == "fp16") return KvDType::kF16;
  if (s == "fp8") return KvDType::kFP8;
  if (s == "int8") return KvDType::kINT8;
  if (s == "int4") return KvDType::kKivi4;
  if (s == "int2") return KvDType::kKivi2;
  if (s == "int4-token") return KvDType::kINT4;
  return absl::InvalidArgumentError(
      absl::StrFormat("--kv-dtype '%s' is unknown (f32, bf16, fp16, fp8, int8, int4, int2, int4-token)", s));
}

double KvBytesPerElement(KvDType t, int32_t head_dim) {
  switch (t) {
    case KvDType::kF32: return 4.0;
    case KvDType::kBF16:
    case KvDType::kF16: return 2.0;
    case KvDType::kFP8:
    case KvDType::kINT8:
    case KvDType::kINT4: return static_cast<double>(KvRowBytes(t, head_dim) + KvScaleBytes(t, head_dim)) / head_dim;
    case KvDType::kKivi4:
    case KvDType::kKivi2:  // at the default 16-token blocks (the key scales are per block)
      return static_cast<double>(KvBlockBytes(t, 16, 1, head_dim)) / (16.0 * head_dim);
  }
  return 0;
}

CapacityPlan PlanCapacity(const ModelConfig& model, const std::vector<ModelShard>& shards, DType weight_dtype,
                          KvDType kv_dtype, int64_t device_bytes, const EngineConfig& config,
                          const WeightSource* source) {
  CapacityPlan plan;
  plan.block_size = config.scheduler.block_size;
  plan.max_step_tokens = config.scheduler.max_tokens_per_step;
  plan.groups = KvGroups(model.num_layers, model.layer_windows);
  const int tp = static_cast<int>(shards.size());
  // The offload tier's block count is the same on every rank (the smallest), as at start-up.
  int64_t offload_blocks = config.kv_offload_bytes > 0 ? int64_t{1} << 30 : 0;
  std::vector<ModelConfig> locals;
  plan.ranks.resize(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    ModelConfig local = model;
    local.num_kv_heads = static_cast<int32_t>(shards[i].kv_heads.size());
    plan.ranks[i].bytes_per_block =
        static_cast<int64_t>(KvCache::BytesPerBlock(local, kv_dtype, config.scheduler.block_size));
    offload_blocks = std::min<int64_t>(offload_blocks, static_cast<int64_t>(config.kv_offload_bytes) / plan.ranks[i].bytes_per_block);
    locals.push_back(local);
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    const ModelShard& s = shards[i];
    const ModelConfig& local = locals[i];
    RankCapacity& r = plan.ranks[i];
    r.weight_bytes = ModelWeights::BytesFor(model, s, weight_dtype, source);
    // The step workspace and, for channel-quantized KV, the sequences' residual blocks (as PlanKvCapacity).
    r.workspace_bytes = static_cast<int64_t>(
        ModelRunner::WorkspaceBytes(model, s, weight_dtype, LimitsFor(config), tp) +
        KvCache::ResidualBytes(local, kv_dtype, config.scheduler.block_size, config.scheduler.max_seqs,
                               config.kv_residual_tokens, config.kv_sink));
    r.window_bytes = static_cast<int64_t>(KvCache::StagingWindowBytes(local, kv_dtype, config.scheduler.block_size,
                                                                      static_cast<int32_t>(offload_blocks)));
    // As PlanKvCapacity: the fraction of what is left after the weights, the step workspace and
    // the staging window.
    const int64_t free = device_bytes - r.weight_bytes - r.window_bytes;
    r.kv_bytes = config.kv_cache_bytes != 0 ? static_cast<int64_t>(config.kv_cache_bytes)
                 : free <= r.workspace_bytes ? 0
                                             : static_cast<int64_t>((free - r.workspace_bytes) * config.memory_fraction);
    r.kv_bytes_per_token = static_cast<double>(r.bytes_per_block) / config.scheduler.block_size;
    r.blocks = KvCache::BlocksForBudget(local, kv_dtype, config.scheduler.block_size,
                                        static_cast<size_t>(std::max<int64_t>(r.kv_bytes, 0)));
  }
  plan.blocks = plan.ranks.empty() ? 0 : plan.ranks.front().blocks;
  for (const RankCapacity& r : plan.ranks) plan.blocks = std::min(plan.blocks, r.blocks);
  return plan;
}

}  // namespace kvs
