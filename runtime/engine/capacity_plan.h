// What fits where: the KV capacity of every rank of a tensor-parallel group, computed from the
// model's shape and a device's memory with the same accounting the runtime uses at start-up
// (ModelWeights::BytesFor, ModelRunner::WorkspaceBytes, EngineConfig::memory_fraction,
// KvCache block sizes) — so `kvshard plan` predicts the block count a real start-up measures.
//
// KV element formats and their bytes per element, scale overhead included (kernels/common/
// kv_format.h): f32 4; bf16 / fp16 2; fp8 (E4M3) / int8: 1 + one f32 scale per (token, head);
// int4: 0.5 + an fp16 scale and an fp16 zero point per group of 32 elements. Block sizes come
// from KvCache::BytesPerBlock, as in the runtime. With sliding-window layers a block is a slab of
// KvGroups::slots() layers and a sequence takes blocks per layer group (KvGroups::BlocksHeld, the
// count the scheduler's admission uses): its windowed groups hold only their window.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/common/dtype.h"
#include "kernels/common/kv_format.h"
#include "runtime/engine/engine.h"
#include "runtime/kv/kv_groups.h"
#include "runtime/model/model_config.h"
#include "runtime/model/model_shard.h"
#include "runtime/model/weight_source.h"

namespace kvs {

absl::StatusOr<KvDType> ParseKvDType(const std::string& s);  // f32|bf16|fp16|fp8|int8|int4
// Bytes per stored element including scales (padding of a block to 16 bytes aside).
double KvBytesPerElement(KvDType t, int32_t head_dim);

struct RankCapacity {
  int64_t weight_bytes = 0;
  int64_t workspace_bytes = 0;
  int64_t window_bytes = 0;          // the offload tier's staging window (KvCache::StagingWindowBytes)
  int64_t kv_bytes = 0;              // what the cache may take
  double kv_bytes_per_token = 0;     // on this rank (its KV heads), of a block's slab of layers
  int64_t bytes_per_block = 0;       // on this rank, the block's slab of layers, K and V
  int32_t blocks = 0;
};

struct CapacityPlan {
  std::vector<RankCapacity> ranks;
  int32_t blocks = 0;  // the group's: the minimum over its ranks
  int32_t block_size = 0;
  int32_t max_step_tokens = 0;  // a prefill chunk's most tokens (a windowed group holds its window and a chunk)
  KvGroups groups;              // the model's layer groups
  // Blocks one sequence of `context` tokens holds at most.
  int64_t BlocksFor(int64_t context) const { return groups.BlocksHeld(context, block_size, max_step_tokens); }
  // The longest single sequence that fits.
  int64_t max_tokens() const { return groups.LongestFitting(blocks, block_size, max_step_tokens, int64_t{1} << 40); }
  // Sequences of `context` tokens that fit at once.
  int64_t MaxSequences(int64_t context) const { return blocks / std::max<int64_t>(BlocksFor(context), 1); }
};

// `device_bytes`: memory each device offers kvshard (the runtime reads it after start-up).
// `config` must be resolved (ResolveEngineConfig). With config.kv_cache_bytes set, that is the
// cache size, as in the runtime.
// `source`, when given, counts the matrices it stores in GGML blocks at their stored size
// (ModelWeights::BytesFor).
CapacityPlan PlanCapacity(const ModelConfig& model, const std::vector<ModelShard>& shards, DType weight_dtype,
                          KvDType kv_dtype, int64_t device_bytes, const EngineConfig& config,
                          const WeightSource* source = nullptr);

}  // namespace kvs
