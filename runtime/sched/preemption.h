// How a sequence is preempted when the KV cache runs out: its blocks swapped to host memory
// (and later back), or dropped and its tokens recomputed on resume. The choice is made per
// preemption from what this machine measured at start-up: moving a block's bytes out and back
// over the host link, against recomputing the sequence's tokens at the measured prefill rate.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kvs {

enum class PreemptionMode { kAuto, kSwap, kRecompute };
absl::StatusOr<PreemptionMode> ParsePreemptionMode(const std::string& s);  // auto|swap|recompute
const char* PreemptionModeName(PreemptionMode m);

struct PreemptionCostModel {
  PreemptionMode mode = PreemptionMode::kRecompute;
  double host_bytes_per_s = 0;      // measured device->host->device copy rate (one direction)
  double prefill_tokens_per_s = 0;  // measured forward-pass rate on a prompt chunk
  double bytes_per_block = 0;       // KV bytes of one block on this device (all layers, K and V)

  // Seconds to swap `blocks` out and back in.
  double SwapSeconds(int64_t blocks) const { return 2.0 * blocks * bytes_per_block / host_bytes_per_s; }
  // Seconds to recompute `tokens` of KV.
  double RecomputeSeconds(int64_t tokens) const { return tokens / prefill_tokens_per_s; }
  // Whether a sequence holding `blocks` for `tokens` computed tokens should be swapped (when the
  // host tier has room) rather than recomputed.
  bool PreferSwap(int64_t blocks, int64_t tokens) const {
    if (mode != PreemptionMode::kAuto) return mode == PreemptionMode::kSwap;
    if (host_bytes_per_s <= 0 || prefill_tokens_per_s <= 0) return false;
    return SwapSeconds(blocks) < RecomputeSeconds(tokens);
  }
};

}  // namespace kvs
