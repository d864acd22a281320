// Iteration-level scheduler over a paged KV cache. Each step it builds one StepInput:
//   1. running sequences, oldest first: a decode token each (or the next prefill chunk);
//   2. waiting sequences, FCFS (or by Request::priority), while the token budget, the sequence
//      limit and free blocks allow.
// A sequence needs ceil(tokens / block_size) blocks; when a running sequence cannot get its
// next block, the newest running sequence is preempted (preemption.h): swapped out (its blocks
// copied to host blocks and freed; it resumes, before any new request is admitted, once its
// blocks fit again) or recomputed (its blocks freed; it re-queues at the front with all its
// tokens as prompt). Swaps are listed in the StepInput and run before that step's forward
// pass. No step both preempts and resumes, so a host block is never written and read in one
// step. Planning is a transaction: blocks are only taken for sequences that are scheduled.
//
// Offload (SchedulerConfig::num_offload_blocks > 0): a request whose longest context needs more
// blocks than the device has is admitted if device plus offload blocks hold it. When it runs out
// of device blocks it first preempts every newer sequence as usual, and only then takes offload
// blocks, which attention reads in place over the host link (kv_cache.h). Why in that order: an
// offloaded block is read again by every later step of its sequence (R reads of its bytes over
// the link for R remaining steps), while a preempted sequence's block crosses the link twice
// (swap) or is recomputed once, so preemption is the cheaper way to make room whenever it can
// make room at all; offload is for what the device cannot hold. Conversely, when an older
// sequence needs a block and the newest running one is offloading, that one moves one of its
// device blocks to the offload tier (a copy queued in the step) instead of being preempted,
// which would mean recomputing a context longer than the device.
//
// Sliding-window layers (SchedulerConfig::kv_groups, runtime/kv/kv_groups.h): a sequence holds
// one block list per layer group, all drawn from the one pool. A windowed group's blocks wholly
// before the window of the sequence's next query go back to the pool (parked for the prefix cache
// when full) each time the sequence grows; everything else — forks, swaps, offload, prefix hits —
// treats every group's held blocks alike. A prefix hit needs, in each windowed group, only the
// blocks of the window before the first recomputed token.
//
// Channel-quantized KV (SchedulerConfig::residual_seqs > 0; kernels/common/kv_format.h): a block is
// written whole ("sealed") when the sequence's residual ring lets go of it (KvResidualRing: when
// it is whole, or once it is older than the ring's kept tokens), so each running sequence holds a
// ring for its newest tokens, and a token the ring lets go of in the step is written by the seal
// (slot -1). Only sealed blocks hold their tokens: a sequence preempted by swap keeps only those
// (the ring's tokens are recomputed on resume), a fork's child recomputes what its parent's ring
// held, and only sealed blocks join the prefix cache.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/common/paged_kv.h"
#include "runtime/kv/block_pool.h"
#include "runtime/kv/kv_groups.h"
#include "runtime/sched/preemption.h"
#include "runtime/sched/request.h"
#include "runtime/sched/step_input.h"

namespace kvs {

// The step's defaults, the one place they are set (the engine, the runner, the server's stats and
// the CLI flags read them): 16-token KV blocks and a 512-token step budget are vLLM's too.
inline constexpr int32_t kDefaultBlockSize = 16;
inline constexpr int32_t kDefaultMaxSeqs = 64;
inline constexpr int32_t kDefaultMaxTokensPerStep = 512;

struct SchedulerConfig {
  int32_t block_size = kDefaultBlockSize;
  int32_t max_seqs = kDefaultMaxSeqs;                            // sequences per step
  int32_t max_tokens_per_step = kDefaultMaxTokensPerStep;        // token budget (prefill chunks + decodes)
  int32_t max_model_len = 0;  // prompt + output cap per sequence; 0 until the engine resolves it
  // The baseline that paging is measured against (benchmarks only): requests are admitted in
  // batches, only when the previous batch has finished, and each reserves the blocks of a full
  // max_model_len context up front (no paging, no preemption).
  bool static_batching = false;
  // Reuse the cached KV of full blocks whose whole prefix matches (block_pool.h); `cache_salt`
  // keeps different models' hashes apart.
  bool prefix_caching = true;
  uint64_t cache_salt = 0;
  int32_t num_host_blocks = 0;        // swap space; 0: preemption always recomputes
  int32_t num_offload_blocks = 0;     // block ids num_blocks.. in host memory, read in place
  double offload_bytes_per_s = 0;     // measured rate of attention's reads of them (0: unknown)
  // Keep evicted prefix-cache blocks warm in the swap space (when moving a block beats
  // recomputing it): a later request with the same prefix swaps them back in.
  bool host_prefix_cache = false;
  PreemptionCostModel preemption;
  // For the message that refuses a request the whole cache cannot hold: bytes of one block on
  // each device of the group, the KV format, and the tensor-parallel degree (0 / "" unknown).
  size_t bytes_per_block = 0;
  std::string kv_dtype_name;
  int32_t tp = 1;
  // The cache's layer groups (KvCache::groups()); none given: one global group.
  KvGroups kv_groups;
  // Channel-quantized KV: the residual rings (KvCache::num_residual_seqs(), one per running
  // sequence at most); 0: tokens are written to their blocks directly.
  int32_t residual_seqs = 0;
  // Channel-quantized KV: blocks per residual ring (KvResidualRing, kernels/common/paged_kv.h): a
  // sequence's newest (rotating blocks - 1) * block_size tokens stay in bf16; 1 seals each block
  // as soon as it is whole. With a sink, one more block keeps the sequence's first block.
  int32_t residual_blocks = 1;
  bool residual_sink = false;
};

struct Sequence {
  Request request;
  std::vector<int32_t> tokens;  // prompt followed by generated tokens
  int32_t prompt_len = 0;
  int32_t num_computed = 0;     // tokens whose KV is in the cache
  // Per KV group, the block of each logical block index (tokens j * block_size ..); a windowed
  // group's blocks before its window are released: kNoBlock.
  std::vector<std::vector<BlockId>> blocks;
  std::vector<std::vector<BlockId>> host_blocks;  // while swapped out, the same shape
  std::vector<uint64_t> block_hashes;  // prefix-cache hash of each full block, in order
  bool may_offload = false;          // its longest context exceeds the device cache (offload)
  int32_t sample_index = 0;          // which of the request's n samples (forks) this is
  int32_t residual = -1;             // channel-quantized KV: its residual ring while running
  bool holds_sink = false;  // its ring's sink holds its first block (computed or refilled since it took the ring)
  int32_t sealed_end = 0;   // channel-quantized KV: its positions in sealed blocks
  bool forked = false;               // its n - 1 siblings exist
  int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
  int32_t preemptions = 0;
};

inline constexpr BlockId kNoBlock{-1};

// Invariant counts, checked by tests after every step.
struct SchedulerCounts {
  int32_t device_blocks_held = 0, host_blocks_held = 0;
};

// What one step scheduled, in StepInput order.
struct ScheduledSeq {
  Sequence* seq;
  int32_t num_tokens;  // tokens fed this step
  bool samples;        // this step completes the sequence's known tokens: sample one more
  // Its first block's tokens again, written to its ring's sink (Scheduler::EmitSinkRefill): no new
  // positions, nothing sampled.
  bool sink_refill = false;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, int32_t num_blocks);

  // Queues a request (prompt length checked against max_model_len and the whole cache).
  absl::Status Add(Request r);
  // Plans the next step into `input`; empty when nothing can run.
  std::vector<ScheduledSeq> Schedule(StepInput& input);
  // The planned step's copies are queued on the device: host blocks its swap-ins read may be
  // reused by later steps (whose copies queue after them).
  void StepSubmitted();
  // After sampling: appends the token to a sequence that sampled.
  void Append(Sequence* seq, int32_t token) { seq->tokens.push_back(token); }
  // Removes a finished or aborted sequence and frees its blocks.
  void Finish(Sequence* seq);
  // Removes every sequence of the request (all its samples), wherever they are.
  bool Abort(const std::string& request_id);
  // A new running sequence sharing all of `parent`'s tokens and blocks (reference-counted; the
  // first write into a shared block copies it first). The next sample index is `parent`'s
  // siblings' count.
  Sequence* Fork(Sequence& parent, int32_t sample_index);

  bool HasWork() const { return !running_.empty() || !waiting_.empty() || !swapped_.empty(); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_swapped() const { return static_cast<int32_t>(swapped_.size()); }
  int64_t num_preemptions() const { return preemptions_; }
  int64_t num_copied_blocks() const { return copied_blocks_; }
  // Prefix caching: prompt tokens looked up at admission, and those found cached (not recomputed).
  int64_t prefix_query_tokens() const { return prefix_query_tokens_; }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_; }
  // Of those, tokens whose blocks came back from the host tier, and blocks parked there.
  int64_t host_prefix_hit_tokens() const { return host_prefix_hit_tokens_; }
  int64_t host_parked_blocks() const { return host_parked_blocks_; }
  int64_t num_swap_preemptions() const { return swap_preemptions_; }
  // Sinks refilled for sequences that resumed from sealed blocks (EmitSinkRefill).
  int64_t num_sink_refills() const { return sink_refills_; }
  // Offload blocks handed out so far, and those held now.
  int64_t num_offloaded_blocks() const { return offloaded_blocks_; }
  int64_t num_demoted_blocks() const { return demoted_blocks_; }  // moved there from the device
  int32_t offload_blocks_held() const { return offload_pool_.num_blocks() - offload_pool_.num_free(); }
  // Lines for the log: the cost model's offload decisions since the last call.
  std::vector<std::string> TakeNotes() { return std::exchange(notes_, {}); }
  const BlockPool& pool() const { return pool_; }
  const BlockPool& host_pool() const { return host_pool_; }
  // Token slots whose KV is in device blocks, one per token per KV group (for KV utilisation:
  // this over allocated slots); the tokens in cache for a model without sliding windows.
  int64_t TokensInCache() const;
  const KvGroups& kv_groups() const { return groups_; }
  // Aborts unless every block is either free or held by exactly one sequence, on both tiers.
  void CheckInvariants() const;
  const SchedulerConfig& config() const { return config_; }
  // Channel-quantized KV: where each sequence's newest tokens stay (kernels/common/paged_kv.h).
  KvResidualRing ring() const {
    return KvResidualRing{config_.block_size, config_.residual_blocks, config_.residual_sink};
  }
  int32_t MaxBlocksPerSeq() const { return (config_.max_model_len + config_.block_size - 1) / config_.block_size; }

 private:
  std::string RefusalMessage(const std::string& id, int64_t tokens, int32_t need) const;
  void NoteOffload(const std::string& id, int64_t tokens, int32_t need);
  int32_t BlocksFor(int32_t tokens) const { return (tokens + config_.block_size - 1) / config_.block_size; }
  int32_t num_groups() const { return groups_.num_groups(); }
  // Group g's prefix-cache key of the block whose chained hash is `hash` (group 0's is `hash`).
  static uint64_t GroupHash(uint64_t hash, int32_t g);
  // Returns the windowed groups' blocks before the window of `s`'s next query to the pool.
  void ReleaseOutOfWindow(Sequence& s);
  // Blocks held by `s` (device or offload), over every group.
  static int32_t HeldBlocks(const std::vector<std::vector<BlockId>>& lists);
  bool sealed_blocks() const { return config_.residual_seqs > 0; }
  // Channel-quantized KV: gives back `s`'s residual ring; gives back its blocks past the sealed
  // ones, so that it holds sealed blocks only (the rest is recomputed).
  void DropResidual(Sequence& s);
  void DropPartialBlock(Sequence& s);
  // Whether `lists` hold every block a step whose first query is at `first_query` reads (the
  // windowed groups release theirs as the sequence grows).
  bool HoldsWindow(const std::vector<std::vector<BlockId>>& lists, int32_t first_query) const;
  // Gives `s` the blocks for `tokens` tokens, copying any shared block it is about to write.
  // With `offload`, blocks the device lacks come from the offload tier.
  bool Grow(Sequence& s, int32_t tokens, StepInput& in, bool offload);
  // Whether running sequence `s` may take offload blocks now: it needs them, and no newer
  // sequence is left to preempt instead. (One being admitted is about to be the newest.)
  bool OffloadNow(const Sequence& s) const { return s.may_offload && running_.back().get() == &s; }
  // Blocks `s` could take now; a block for it (device first).
  int32_t FreeFor(bool offload) const { return pool_.num_free() + (offload ? offload_pool_.num_free() : 0); }
  BlockId AllocateFor(bool offload, StepInput& in);
  BlockId AllocateOffload();  // the caller checked that one is free
  // Moves one of offloading sequence `s`'s unshared device blocks to the offload tier (queued as
  // a copy), freeing the device block; false when none can move.
  bool Demote(Sequence& s, StepInput& in);
  // Reference counting across both pools (offload ids follow the device's).
  bool IsOffload(BlockId b) const { return b.value >= pool_.num_blocks(); }
  BlockId OffloadLocal(BlockId b) const { return BlockId{b.value - pool_.num_blocks()}; }  // its offload_pool_ id
  void AddRefBlock(BlockId b);
  void ReleaseBlock(BlockId b);
  int32_t RefCountOf(BlockId b) const;
  void Preempt(std::unique_ptr<Sequence> s, StepInput& in);
  // Moves swapped sequences whose blocks fit back to running (oldest first).
  void Resume(StepInput& in);
  // Schedules n tokens of `s` (or, see EmitSinkRefill, its sink's refill instead); returns the
  // tokens the step spends on it, at most `budget`.
  int32_t Emit(Sequence& s, int32_t n, int32_t budget, StepInput& in, std::vector<ScheduledSeq>& out);
  // A sequence that resumed from sealed blocks (prefix hit, swap-in, fork) and took a ring with a
  // sink: this step recomputes its first block's tokens (positions [0, block_size), attending to
  // themselves only) into the sink, in place of its own tokens, which follow next step reading
  // the sink as a sequence that computed its first block itself does. Its sealed block 0 is not
  // rewritten: the entry's sealed positions already cover it.
  void EmitSinkRefill(Sequence& s, StepInput& in, std::vector<ScheduledSeq>& out);
  // Prefix caching: takes the cached blocks of `s`'s leading full blocks (never its last token,
  // which must be computed for its logits) and counts them computed.
  // With the host tier, leading blocks found there are swapped in (queued in `in`).
  void MatchPrefix(Sequence& s, StepInput& in);
  // Undoes MatchPrefix for a sequence that was not admitted after all.
  void UnmatchPrefix(Sequence& s);
  // Registers `s`'s newly filled blocks in the prefix cache.
  void RegisterFullBlocks(Sequence& s);
  // A device block for this step; a cached block it evicts goes to the host tier first.
  BlockId AllocateBlock(StepInput& in);
  uint64_t BlockHash(uint64_t parent, const Sequence& s, size_t block) const;

  SchedulerConfig config_;
  BlockPool pool_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // admission order: oldest first
  std::deque<std::unique_ptr<Sequence>> swapped_;   // oldest first
  BlockPool host_pool_;
  BlockPool offload_pool_;  // local ids; the scheduler's id is pool_.num_blocks() + local
  int64_t offloaded_blocks_ = 0, demoted_blocks_ = 0;
  std::vector<std::pair<int32_t, int32_t>> demoted_this_step_;  // (device, offload) copies queued
  std::vector<std::string> notes_;
  int64_t preemptions_ = 0, swap_preemptions_ = 0, copied_blocks_ = 0, sink_refills_ = 0;
  int64_t prefix_query_tokens_ = 0, prefix_hit_tokens_ = 0;
  int64_t host_prefix_hit_tokens_ = 0, host_parked_blocks_ = 0;
  // Host blocks read by this step's swap-ins (resumed sequences, cached prefixes): held until
  // StepSubmitted, so no swap-out queued in the same step can overwrite them first.
  std::vector<BlockId> host_reads_;
  // Device blocks filled from the host tier for the sequence being admitted, registered in the
  // prefix cache once it is admitted (hash per block).
  std::vector<std::pair<BlockId, uint64_t>> pending_host_hits_;
  int64_t pending_host_hit_tokens_ = 0;
  KvGroups groups_;
  std::vector<std::vector<int32_t>> group_slots_;  // this step's KV slots per group (scratch)
  std::vector<int32_t> free_residuals_;            // channel-quantized KV: residual rings free
};

}  // namespace kvs
