// How a model's layers share the KV cache's blocks when some layers attend to a sliding window
// (Gemma 3's local layers, Mistral's) and others to the whole context.
//
// The layers are cut into groups of equal size `slots`, each group holding layers of one window
// (0: global). A KV block is one slab of `slots` layers' K and V; every block of the one pool can
// serve any group, and each sequence holds one block list per group. A global group's list covers
// the whole context. A windowed group's list is indexed the same way (logical block j holds
// tokens j * block_size ..), but the blocks wholly before the window of the sequence's next query
// are released back to the pool, so it holds about window / block_size blocks at any length.
// The attention kernels never read a key before the window of the lowest query row they serve
// (paged_kv.h), so released entries of a block table are never read.
//
// Layer l uses slab slot `layer_slot[l]` of its group's blocks: one K and one V buffer per slot,
// shared by the layers of every group at that slot. The slot count is the smallest number of
// layers of any window (vLLM's hybrid allocator sizes its groups the same way), so no group is
// larger than the rarest kind; a kind whose count it does not divide has a last group with unused
// slots. A model without windows is one global group of all its layers: today's layout.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/common/paged_kv.h"

namespace kvs {

class KvGroups {
 public:
  // `layer_windows`: each layer's window (0: global), or empty when every layer is global.
  KvGroups(int32_t num_layers, std::span<const int32_t> layer_windows);
  KvGroups() = default;  // no layers (a cache not yet made)

  int32_t num_groups() const { return static_cast<int32_t>(window_.size()); }
  int32_t slots() const { return slots_; }  // layers' worth of K and V in one block
  int32_t num_layers() const { return static_cast<int32_t>(layer_group_.size()); }
  int32_t window(int32_t group) const { return window_[group]; }
  bool windowed(int32_t group) const { return window_[group] > 0; }
  bool any_windowed() const;
  int32_t group_of(int32_t layer) const { return layer_group_[layer]; }
  int32_t slot_of(int32_t layer) const { return layer_slot_[layer]; }
  const std::vector<int32_t>& group_windows() const { return window_; }

  // The first logical block of `group` that a step whose first query is at position `first_query`
  // reads: 0 for a global group; the block of key first_query - window + 1 for a windowed one.
  int32_t FirstLiveBlock(int32_t group, int32_t first_query, int32_t block_size) const;
  // Blocks a sequence of `tokens` tokens holds at most in every group together, when steps feed it
  // at most `max_step_tokens` tokens at once: the one count the scheduler's admission, `plan` and
  // the capacity log share.
  int64_t BlocksHeld(int64_t tokens, int32_t block_size, int32_t max_step_tokens) const;
  // The most blocks one group of window `window` holds at any length (its share of BlocksHeld).
  static int64_t WindowSpanBlocks(int32_t window, int32_t block_size, int32_t max_step_tokens);
  // The longest sequence that `blocks` blocks hold (BlocksHeld's inverse), capped at `cap`.
  int64_t LongestFitting(int64_t blocks, int32_t block_size, int32_t max_step_tokens, int64_t cap) const;
  // Channel-quantized KV: the residual ring (KvResidualRing) that keeps at least the newest
  // `residual_tokens` tokens in bf16 — ceil(residual_tokens / block_size) + 1 rotating blocks, but
  // no more than the smallest window holds (blocks * block_size <= window), so that a windowed
  // group never releases a block the ring has not let go of yet; at least 1 — and, where it keeps
  // any (residual_tokens > 0) and `sink` asks for it, the sequence's first block in a sink block of
  // its own.
  KvResidualRing Ring(int32_t residual_tokens, int32_t block_size, bool with_sink = true) const;
  // One line for logs and `plan`: "1 global + 5 windowed (512) groups of 3 layers".
  std::string Describe() const;

 private:
  int32_t slots_ = 0;
  std::vector<int32_t> window_;  // per group
  std::vector<int32_t> layer_group_, layer_slot_;
};

}  // namespace kvs
