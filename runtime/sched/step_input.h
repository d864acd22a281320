// One forward step's inputs, built on the host by the scheduler. Tokens of all scheduled
// sequences are flattened: sequence s contributes rows [query_start[s], query_start[s+1]).
// With sliding-window layers the cache has several layer groups (runtime/kv/kv_groups.h), each
// with its own block table and KV slots: the per-group arrays are stored group after group.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/common/paged_kv.h"

namespace kvs {

struct StepInput {
  std::vector<int32_t> token_ids;     // [T]
  std::vector<int32_t> positions;     // [T] position of each token in its sequence
  std::vector<int32_t> slot_mapping;  // [G][T] KV slot (block * block_size + offset) of each token
  std::vector<int32_t> query_start;   // [S + 1]
  std::vector<int32_t> context_len;   // [S] tokens in the sequence after this step
  // [G][S * max_blocks_per_seq]; unused entries 0, and so are a windowed group's released blocks
  // (before the window of the sequence's first query this step: never read).
  std::vector<int32_t> block_table;
  int32_t max_blocks_per_seq = 0;
  int32_t num_kv_groups = 1;          // G
  // Channel-quantized KV (kernels/common/kv_format.h): each sequence's residual ring (its newest
  // tokens until the ring lets go of their block; group g's ring is residual * G + g). Empty
  // otherwise.
  std::vector<int32_t> residual;      // [S]
  // With residuals: where each sequence's sealed positions ended before this step (a multiple of
  // the block size; AttentionBatch::sealed).
  std::vector<int32_t> sealed;  // [S]
  // With residuals: 1 where the sequence's ring holds its first block (AttentionBatch::sink).
  std::vector<int32_t> sink;          // [S]
  std::vector<int32_t> logit_rows;    // token rows whose next-token logits are wanted
  // Block moves, done before the step's forward pass in this order: swap-outs, copies, swap-ins.
  std::vector<int32_t> swap_out;      // pairs (device block, host block): preemption by swap
  std::vector<int32_t> swap_in;       // pairs (host block, device block)
  // Copy-on-write of blocks shared by forked sequences, and device blocks an offloading sequence
  // moves to the offload tier (scheduler.h); applied as if one by one, in list order.
  std::vector<int32_t> copy_blocks;   // pairs (source block, destination block)

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_len.size()); }
  // Group g's block table rows and token slots.
  std::span<const int32_t> GroupTable(int32_t g) const {
    const size_t n = static_cast<size_t>(num_seqs()) * max_blocks_per_seq;
    return std::span<const int32_t>(block_table).subspan(g * n, n);
  }
  std::span<const int32_t> GroupSlots(int32_t g) const {
    return std::span<const int32_t>(slot_mapping).subspan(static_cast<size_t>(g) * num_tokens(), num_tokens());
  }
  // Whether the per-group arrays have the sizes the counts imply.
  bool GroupArraysConsistent() const {
    return num_kv_groups >= 1 && slot_mapping.size() == static_cast<size_t>(num_kv_groups) * num_tokens() &&
           block_table.size() == static_cast<size_t>(num_kv_groups) * num_seqs() * max_blocks_per_seq;
  }
  void Clear() {
    token_ids.clear(); positions.clear(); slot_mapping.clear(); query_start.assign(1, 0);
    context_len.clear(); block_table.clear(); logit_rows.clear(); max_blocks_per_seq = 0; num_kv_groups = 1;
    residual.clear();
    sealed.clear();
    sink.clear();
    swap_out.clear(); swap_in.clear(); copy_blocks.clear();
  }
};

// For steps built by hand (perplexity, benchmarks, tests) over a cache of `groups` KV groups:
// repeats group 0's block table and slots for every other group, group g's blocks `blocks_apart`
// block ids after group 0's (each group needs blocks of its own).
// Residual slots move to the group's ring (rings of `ring_blocks` blocks, as PlaceTailsInResiduals).
void RepeatForKvGroups(StepInput& in, int32_t groups, int32_t blocks_apart, int32_t block_size,
                       int32_t ring_blocks = 1);
// For steps built by hand over a channel-quantized cache whose rings are `ring` (KvCache::ring()):
// sequence i (residual i) writes the tokens its ring keeps after the step to the ring (its first
// block to the sink too, where the ring has one: it holds it), and the others through
// Backend::SealKvGroups (slot -1), as the scheduler places them; each sequence is taken to be
// computed from position 0 by such steps, and its sealed positions to be those its ring let go of
// before the step.
// Before RepeatForKvGroups.
void PlaceTailsInResiduals(StepInput& in, const KvResidualRing& ring, int32_t groups);

// What a tensor-parallel group's rank 0 tells its other ranks before every step: run a step, or
// stop (Collectives::SendStep; its encoding is parallel/step_wire.h).
enum class StepCommand : int32_t { kRun = 1, kStop = 2 };

}  // namespace kvs
