// The step message on the wire: how a tensor-parallel group's rank 0 sends each StepInput (or
// the stop command) to its other ranks, as int32 words broadcast over MPI:
// [command, greedy_only, max_blocks_per_seq, T, S, rows, swap-out words, swap-in words, copy
// words, G, residuals (0 or S), then token_ids, positions, slot_mapping, query_start,
// context_len, block_table, logit_rows, swap_out, swap_in, copy_blocks, residual, sealed (both
// `residuals` words)].
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/sched/step_input.h"

namespace kvs {

void EncodeStep(const StepInput& in, bool greedy_only, std::vector<int32_t>& words);
void EncodeStop(std::vector<int32_t>& words);
// Decodes `words` into `in`; a malformed message is an error, never a crash.
absl::StatusOr<StepCommand> DecodeStep(std::span<const int32_t> words, StepInput& in, bool& greedy_only);

}  // namespace kvs
