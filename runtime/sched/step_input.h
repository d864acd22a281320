// One forward step's inputs, built on the host by the scheduler. Tokens of all scheduled
// sequences are flattened: sequence s contributes rows [query_start[s], query_start[s+1]).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace kvs {

struct StepInput {
  std::vector<int32_t> token_ids;     // [T]
  std::vector<int32_t> positions;     // [T] position of each token in its sequence
  std::vector<int32_t> slot_mapping;  // [T] KV slot (block * block_size + offset) of each token
  std::vector<int32_t> query_start;   // [S + 1]
  std::vector<int32_t> context_len;   // [S] tokens in the sequence after this step
  std::vector<int32_t> block_table;   // [S * max_blocks_per_seq], unused entries 0
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> logit_rows;    // token rows whose next-token logits are wanted
  // Block moves, done before the step's forward pass in this order: swap-outs, copies, swap-ins.
  std::vector<int32_t> swap_out;      // pairs (device block, host block): preemption by swap
  std::vector<int32_t> swap_in;       // pairs (host block, device block)
  // Copy-on-write of blocks shared by forked sequences, and device blocks an offloading sequence
  // moves to the offload tier (scheduler.h); applied as if one by one, in list order.
  std::vector<int32_t> copy_blocks;   // pairs (source block, destination block)

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_len.size()); }
  void Clear() {
    token_ids.clear(); positions.clear(); slot_mapping.clear(); query_start.assign(1, 0);
    context_len.clear(); block_table.clear(); logit_rows.clear(); max_blocks_per_seq = 0;
    swap_out.clear(); swap_in.clear(); copy_blocks.clear();
  }
};

// The message a tensor-parallel group's rank 0 sends its other ranks before every step (or to
// stop them), as int32 words: [command, greedy_only, max_blocks_per_seq, T, S, rows, swap-out
// words, swap-in words, copy words, then token_ids, positions, slot_mapping, query_start,
// context_len, block_table, logit_rows, swap_out, swap_in, copy_blocks].
enum class StepCommand : int32_t { kRun = 1, kStop = 2 };
void EncodeStep(const StepInput& in, bool greedy_only, std::vector<int32_t>& words);
void EncodeStop(std::vector<int32_t>& words);
// Decodes `words` into `in`; a malformed message is an error, never a crash.
absl::StatusOr<StepCommand> DecodeStep(std::span<const int32_t> words, StepInput& in, bool& greedy_only);

}  // namespace kvs
