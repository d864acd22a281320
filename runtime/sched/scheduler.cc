#include "runtime/sched/scheduler.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "runtime/kv/block_hash.h"

namespace kvs {

Scheduler::Scheduler(SchedulerConfig config, int32_t num_blocks)
    : config_(config), pool_(num_blocks), host_pool_(config.num_host_blocks), offload_pool_(config.num_offload_blocks) {
  KVS_CHECK(config_.block_size > 0 && config_.max_seqs > 0 && config_.max_tokens_per_step > 0);
}

// Why a request can never run here, in bytes, with what would make it fit — decided at admission,
// before anything is computed, instead of failing later for want of memory.
std::string Scheduler::RefusalMessage(const std::string& id, int64_t tokens, int32_t need) const {
  std::string msg = absl::StrFormat("request '%s': %d tokens need %d KV blocks but the cache holds %d", id, tokens, need,
                                    pool_.num_blocks());
  if (config_.bytes_per_block > 0) {
    const double gib = 1024.0 * 1024.0 * 1024.0, per = static_cast<double>(config_.bytes_per_block);
    absl::StrAppendFormat(&msg, " (%.2f GiB of %s KV per device needed, %.2f GiB available: %.2f GiB short, tp=%d)",
                          need * per / gib, config_.kv_dtype_name, pool_.num_blocks() * per / gib,
                          (need - pool_.num_blocks()) * per / gib, config_.tp);
  }
  if (offload_pool_.num_blocks() > 0) {
    absl::StrAppendFormat(&msg, ", plus %d offload blocks in host memory (%d short)", offload_pool_.num_blocks(),
                          need - pool_.num_blocks() - offload_pool_.num_blocks());
  }
  msg += "; options: more tensor parallelism (--tp, which splits the KV heads over more GPUs), a smaller "
         "--kv-dtype (fp8/int8 halve bf16, int4 quarters it), a larger --kv-cache-memory / --memory-fraction, "
         "host offload (--kv-offload-memory: attention reads the rest over the host link, slowly), "
         "or fewer tokens (max_tokens, a shorter prompt)";
  return msg;
}

absl::Status Scheduler::Add(Request r) {
  KVS_RETURN_IF_ERROR(r.params.Validate());
  const int32_t prompt = static_cast<int32_t>(r.prompt_ids.size());
  if (prompt == 0) return absl::InvalidArgumentError(absl::StrFormat("request '%s': the prompt is empty", r.id));
  if (r.params.n > config_.max_seqs) {
    return absl::InvalidArgumentError(absl::StrFormat("request '%s': n = %d exceeds --max-seqs %d", r.id, r.params.n,
                                                      config_.max_seqs));
  }
  if (prompt >= config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "request '%s': prompt of %d tokens leaves no room to generate within the %d-token context", r.id, prompt,
        config_.max_model_len));
  }
  // The longest this sequence can get must fit in the whole cache, or it could never finish.
  const int64_t longest = std::min<int64_t>(static_cast<int64_t>(prompt) + r.params.max_tokens, config_.max_model_len);
  const int32_t need = BlocksFor(static_cast<int32_t>(longest));
  if (need > pool_.num_blocks() + offload_pool_.num_blocks()) {
    return absl::ResourceExhaustedError(RefusalMessage(r.id, longest, need));
  }
  auto s = std::make_unique<Sequence>();
  if (need > pool_.num_blocks()) {
    s->may_offload = true;
    NoteOffload(r.id, longest, need);
  }
  s->tokens = r.prompt_ids;
  s->prompt_len = prompt;
  s->request = std::move(r);
  // Behind every waiting sequence of the same or higher priority (FCFS by default). Preempted
  // sequences re-queue at the very front regardless: they were admitted already.
  auto at = waiting_.end();
  while (at != waiting_.begin() && (*std::prev(at))->request.priority < s->request.priority) --at;
  waiting_.insert(at, std::move(s));
  return absl::OkStatus();
}

// The cost model's account of an offloaded request: what it will read over the host link.
void Scheduler::NoteOffload(const std::string& id, int64_t tokens, int32_t need) {
  const int32_t host = need - pool_.num_blocks();
  std::string note = absl::StrFormat(
      "request '%s': %d tokens need %d KV blocks, %d more than the device holds: admitted with offload (at most %d "
      "blocks in host memory, read in place by attention; newer sequences are preempted before any is used)",
      id, tokens, need, host, host);
  if (config_.bytes_per_block > 0) {
    const double bytes = static_cast<double>(host) * config_.bytes_per_block;
    absl::StrAppendFormat(&note, "; at full length each step reads %.2f %s over the host link",
                          bytes >= (1u << 30) ? bytes / (1u << 30) : bytes / (1u << 20), bytes >= (1u << 30) ? "GiB" : "MiB");
    if (config_.offload_bytes_per_s > 0) {
      absl::StrAppendFormat(&note, ": +%.1f ms per decode step at the measured %.1f GB/s",
                            1e3 * bytes / config_.offload_bytes_per_s, config_.offload_bytes_per_s / 1e9);
    }
  }
  notes_.push_back(std::move(note));
}

BlockId Scheduler::AllocateOffload() {
  ++offloaded_blocks_;
  return BlockId{pool_.num_blocks() + offload_pool_.Allocate()->value};
}

BlockId Scheduler::AllocateFor(bool offload, StepInput& in) {
  return pool_.num_free() > 0 || !offload ? AllocateBlock(in) : AllocateOffload();
}

void Scheduler::AddRefBlock(BlockId b) {
  if (IsOffload(b)) {
    offload_pool_.AddRef(OffloadLocal(b));
  } else {
    pool_.AddRef(b);
  }
}

void Scheduler::ReleaseBlock(BlockId b) {
  if (IsOffload(b)) {
    offload_pool_.Release(OffloadLocal(b));
  } else {
    pool_.Release(b);
  }
}

int32_t Scheduler::RefCountOf(BlockId b) const {
  return IsOffload(b) ? offload_pool_.RefCount(OffloadLocal(b)) : pool_.RefCount(b);
}

bool Scheduler::Demote(Sequence& s, StepInput& in) {
  if (offload_pool_.num_free() == 0) return false;
  for (size_t i = s.blocks.size(); i-- > 0;) {
    const BlockId b = s.blocks[i];
    if (IsOffload(b) || pool_.RefCount(b) > 1) continue;  // a shared block stays for its siblings
    const BlockId moved = AllocateOffload();
    ++demoted_blocks_;
    // Queued before this step's kernels, which may already write the freed block.
    in.copy_blocks.push_back(b.value);
    in.copy_blocks.push_back(moved.value);
    demoted_this_step_.emplace_back(b.value, moved.value);
    s.blocks[i] = moved;
    pool_.Release(b);
    return true;
  }
  return false;
}

bool Scheduler::Grow(Sequence& s, int32_t tokens, StepInput& in, bool offload) {
  const int32_t want = BlocksFor(tokens);
  const auto have = static_cast<int32_t>(s.blocks.size());
  // Held blocks this step writes into that a sibling also holds: each needs a private copy.
  std::vector<int32_t> shared;
  for (int32_t i = s.num_computed / config_.block_size; i < std::min(have, want); ++i) {
    if (RefCountOf(s.blocks[i]) > 1) shared.push_back(i);
  }
  const int32_t need = std::max(want - have, 0) + static_cast<int32_t>(shared.size());
  if (need > FreeFor(offload)) return false;
  for (int32_t i : shared) {
    const BlockId copy = AllocateFor(offload, in);
    in.copy_blocks.push_back(s.blocks[i].value);
    in.copy_blocks.push_back(copy.value);
    ReleaseBlock(s.blocks[i]);  // still held by the sibling, so its contents stay for the copy
    s.blocks[i] = copy;
    ++copied_blocks_;
  }
  for (int32_t i = have; i < want; ++i) s.blocks.push_back(AllocateFor(offload, in));
  return true;
}

Sequence* Scheduler::Fork(Sequence& parent, int32_t sample_index) {
  auto child = std::make_unique<Sequence>();
  child->request = parent.request;
  child->tokens = parent.tokens;
  child->prompt_len = parent.prompt_len;
  child->num_computed = parent.num_computed;
  child->blocks = parent.blocks;
  child->block_hashes = parent.block_hashes;
  for (BlockId b : child->blocks) AddRefBlock(b);
  child->may_offload = parent.may_offload;  // as long as its parent
  child->sample_index = sample_index;
  child->forked = true;
  parent.forked = true;
  running_.push_back(std::move(child));
  return running_.back().get();
}

void Scheduler::Preempt(std::unique_ptr<Sequence> s, StepInput& in) {
  ++s->preemptions;
  ++preemptions_;
  // Where each block's contents are when this step's swap-outs run: blocks this step moved to the
  // offload tier are not copied yet (copies run after swap-outs), so those copies are dropped and
  // a swap-out reads the device block they would have read.
  std::vector<int32_t> contents_at;
  for (BlockId b : s->blocks) contents_at.push_back(b.value);
  for (const auto& [from, to] : demoted_this_step_) {
    const auto it = std::find(contents_at.begin(), contents_at.end(), to);
    if (it == contents_at.end()) continue;
    *it = from;
    for (size_t k = 0; k < in.copy_blocks.size(); k += 2) {
      if (in.copy_blocks[k] == from && in.copy_blocks[k + 1] == to) {
        in.copy_blocks.erase(in.copy_blocks.begin() + k, in.copy_blocks.begin() + k + 2);
        break;
      }
    }
  }
  const auto blocks = static_cast<int32_t>(s->blocks.size());
  if (blocks > 0 && blocks <= host_pool_.num_free() && config_.preemption.PreferSwap(blocks, s->num_computed)) {
    for (size_t i = 0; i < s->blocks.size(); ++i) {
      const BlockId b = s->blocks[i];
      const BlockId h = *host_pool_.Allocate();
      in.swap_out.push_back(contents_at[i]);
      in.swap_out.push_back(h.value);
      s->host_blocks.push_back(h);
      ReleaseBlock(b);
    }
    s->blocks.clear();
    ++swap_preemptions_;
    // Victims go newest first, so each one is older than those already swapped: it resumes first.
    swapped_.push_front(std::move(s));
    return;
  }
  for (BlockId b : s->blocks) ReleaseBlock(b);
  s->blocks.clear();
  s->block_hashes.clear();
  s->num_computed = 0;
  waiting_.push_front(std::move(s));
}

void Scheduler::Resume(StepInput& in) {
  while (!swapped_.empty() && static_cast<int32_t>(running_.size()) < config_.max_seqs) {
    Sequence& s = *swapped_.front();
    // Its blocks back, plus room for the token it will compute next.
    const int32_t need = BlocksFor(s.num_computed + 1);
    if (need > FreeFor(s.may_offload)) return;
    for (BlockId h : s.host_blocks) {
      const BlockId b = AllocateFor(s.may_offload, in);
      in.swap_in.push_back(h.value);
      in.swap_in.push_back(b.value);
      s.blocks.push_back(b);
      // Freed once the step is submitted: a swap-out queued later in this step (they all run
      // before the swap-ins) must not reuse it.
      host_reads_.push_back(h);
    }
    s.host_blocks.clear();
    running_.push_back(std::move(swapped_.front()));
    swapped_.pop_front();
  }
}

uint64_t Scheduler::BlockHash(uint64_t parent, const Sequence& s, size_t block) const {
  const size_t bs = config_.block_size;
  return ChainBlockHash(parent, std::span<const int32_t>(s.tokens).subspan(block * bs, bs));
}

void Scheduler::StepSubmitted() {
  for (BlockId h : host_reads_) host_pool_.Release(h);
  host_reads_.clear();
}

BlockId Scheduler::AllocateBlock(StepInput& in) {
  if (config_.host_prefix_cache) {
    const std::optional<uint64_t> hash = pool_.EvictionCandidateHash();
    if (hash && !host_pool_.Lookup(*hash) && host_pool_.num_free() > 0 &&
        config_.preemption.PreferSwap(1, config_.block_size)) {
      const BlockId victim = *pool_.Allocate();
      const BlockId host = *host_pool_.Allocate();
      in.swap_out.push_back(victim.value);  // queued before this step's kernels reuse the block
      in.swap_out.push_back(host.value);
      host_pool_.Register(host, *hash);
      host_pool_.Release(host);  // parked: found by hash, and free for preemption swaps (LRU)
      ++host_parked_blocks_;
      return victim;
    }
  }
  return *pool_.Allocate();
}

void Scheduler::MatchPrefix(Sequence& s, StepInput& in) {
  const size_t bs = config_.block_size;
  const size_t max_blocks = (s.tokens.size() - 1) / bs;
  prefix_query_tokens_ += static_cast<int64_t>(s.tokens.size());
  pending_host_hits_.clear();
  uint64_t parent = config_.cache_salt;
  for (size_t i = 0; i < max_blocks; ++i) {
    const uint64_t h = BlockHash(parent, s, i);
    if (const std::optional<BlockId> cached = pool_.Lookup(h)) {
      pool_.Acquire(*cached);
      s.blocks.push_back(*cached);
    } else {
      // From the host tier, if it has the block and the device can take the whole prompt (so the
      // admission that follows cannot fail and leave a half-filled block behind).
      const std::optional<BlockId> host = config_.host_prefix_cache ? host_pool_.Lookup(h) : std::nullopt;
      const int32_t rest = BlocksFor(static_cast<int32_t>(s.tokens.size())) - static_cast<int32_t>(s.blocks.size());
      if (!host || rest > pool_.num_free()) break;
      host_pool_.Acquire(*host);
      host_reads_.push_back(*host);
      const BlockId b = AllocateBlock(in);
      in.swap_in.push_back(host->value);
      in.swap_in.push_back(b.value);
      s.blocks.push_back(b);
      pending_host_hits_.emplace_back(b, h);
      host_prefix_hit_tokens_ += static_cast<int64_t>(bs);
    }
    s.block_hashes.push_back(h);
    parent = h;
  }
  s.num_computed = static_cast<int32_t>(s.blocks.size() * bs);
  prefix_hit_tokens_ += s.num_computed;
}

void Scheduler::UnmatchPrefix(Sequence& s) {
  // Blocks filled from the host were never registered: they return to the pool as plain blocks.
  host_prefix_hit_tokens_ -= static_cast<int64_t>(pending_host_hits_.size()) * config_.block_size;
  pending_host_hits_.clear();
  for (BlockId b : s.blocks) ReleaseBlock(b);
  prefix_hit_tokens_ -= s.num_computed;
  prefix_query_tokens_ -= static_cast<int64_t>(s.tokens.size());
  s.blocks.clear();
  s.block_hashes.clear();
  s.num_computed = 0;
}

void Scheduler::RegisterFullBlocks(Sequence& s) {
  const size_t full = static_cast<size_t>(s.num_computed) / config_.block_size;
  for (size_t i = s.block_hashes.size(); i < full; ++i) {
    const uint64_t h = BlockHash(i == 0 ? config_.cache_salt : s.block_hashes.back(), s, i);
    if (!IsOffload(s.blocks[i])) pool_.Register(s.blocks[i], h);  // offload blocks are not shared
    s.block_hashes.push_back(h);
  }
}

void Scheduler::Emit(Sequence& s, int32_t n, StepInput& in, std::vector<ScheduledSeq>& out) {
  const int32_t bs = config_.block_size;
  for (int32_t k = s.num_computed; k < s.num_computed + n; ++k) {
    in.token_ids.push_back(s.tokens[k]);
    in.positions.push_back(k);
    in.slot_mapping.push_back(s.blocks[k / bs].value * bs + k % bs);
  }
  s.num_computed += n;
  if (config_.prefix_caching && !config_.static_batching) RegisterFullBlocks(s);
  in.query_start.push_back(in.num_tokens());
  in.context_len.push_back(s.num_computed);
  const bool samples = s.num_computed == static_cast<int32_t>(s.tokens.size());
  if (samples) in.logit_rows.push_back(in.num_tokens() - 1);
  out.push_back({&s, n, samples});
}

std::vector<ScheduledSeq> Scheduler::Schedule(StepInput& in) {
  in.Clear();
  StepSubmitted();
  demoted_this_step_.clear();
  std::vector<ScheduledSeq> out;
  int32_t budget = config_.max_tokens_per_step;

  const int64_t preempted_before = preemptions_;
  const bool batch_was_empty = running_.empty() && swapped_.empty();
  const auto seq_limit = static_cast<size_t>(config_.max_seqs);
  for (size_t i = 0; i < running_.size() && budget > 0 && out.size() < seq_limit;) {
    Sequence& s = *running_[i];
    const int32_t n = std::min<int32_t>(static_cast<int32_t>(s.tokens.size()) - s.num_computed, budget);
    if (Grow(s, s.num_computed + n, in, OffloadNow(s))) {
      Emit(s, n, in, out);
      budget -= n;
      ++i;
      continue;
    }
    // Out of blocks. The newest running sequence makes room: an offloading one by moving a device
    // block of its own to the offload tier (one block's bytes over the link, instead of
    // recomputing a context longer than the device), any other by being preempted (possibly s
    // itself). Then retry.
    if (running_.back().get() != &s && running_.back()->may_offload && Demote(*running_.back(), in)) continue;
    std::unique_ptr<Sequence> victim = std::move(running_.back());
    running_.pop_back();
    Preempt(std::move(victim), in);
  }
  // Swapped sequences come back before new requests are admitted; resumed ones run this step
  // if the budget allows (they hold their blocks either way).
  if (preemptions_ == preempted_before && !swapped_.empty()) {
    const size_t first_resumed = running_.size();
    Resume(in);
    for (size_t i = first_resumed; i < running_.size() && budget > 0 && out.size() < seq_limit; ++i) {
      Sequence& s = *running_[i];
      const int32_t n = std::min<int32_t>(static_cast<int32_t>(s.tokens.size()) - s.num_computed, budget);
      if (!Grow(s, s.num_computed + n, in, OffloadNow(s))) break;
      Emit(s, n, in, out);
      budget -= n;
    }
  }

  // Static batching admits only into an empty batch (those admitted this step join it).
  const bool admit = !config_.static_batching || batch_was_empty;
  while (admit && swapped_.empty() && !waiting_.empty() && budget > 0) {
    Sequence& s = *waiting_.front();
    // Room for the request's forks too (they join when its prompt is done).
    const int32_t seats = s.forked ? 1 : s.request.params.n;
    if (static_cast<int32_t>(running_.size()) + seats > config_.max_seqs) break;
    const bool match = config_.prefix_caching && !config_.static_batching && s.blocks.empty();
    if (match) MatchPrefix(s, in);
    const int32_t n = std::min<int32_t>(static_cast<int32_t>(s.tokens.size()) - s.num_computed, budget);
    if ((config_.static_batching && !Grow(s, config_.max_model_len, in, s.may_offload)) ||  // the whole context
        !Grow(s, s.num_computed + n, in, s.may_offload)) {
      if (match) UnmatchPrefix(s);
      break;
    }
    for (const auto& [b, h] : pending_host_hits_) pool_.Register(b, h);
    pending_host_hits_.clear();
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    Emit(s, n, in, out);
    budget -= n;
  }

  // Block table rows, padded to the longest scheduled sequence.
  int32_t width = 1;
  for (const ScheduledSeq& ss : out) width = std::max<int32_t>(width, static_cast<int32_t>(ss.seq->blocks.size()));
  in.max_blocks_per_seq = width;
  in.block_table.assign(out.size() * width, 0);
  for (size_t r = 0; r < out.size(); ++r) {
    const auto& blocks = out[r].seq->blocks;
    for (size_t j = 0; j < blocks.size(); ++j) in.block_table[r * width + j] = blocks[j].value;
  }
  return out;
}

void Scheduler::Finish(Sequence* seq) {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].get() != seq) continue;
    for (BlockId b : seq->blocks) ReleaseBlock(b);
    running_.erase(running_.begin() + i);
    return;
  }
  KVS_CHECK_MSG(false, "Finish of a sequence that is not running");
}

bool Scheduler::Abort(const std::string& id) {
  bool found = false;
  for (size_t i = 0; i < running_.size();) {
    if (running_[i]->request.id != id) {
      ++i;
      continue;
    }
    Finish(running_[i].get());
    found = true;
  }
  // Queued sequences hold device blocks (waiting) or host blocks (swapped); release whichever.
  const auto drop = [&](const std::unique_ptr<Sequence>& s) {
    if (s->request.id != id) return false;
    for (BlockId b : s->blocks) ReleaseBlock(b);
    for (BlockId h : s->host_blocks) host_pool_.Release(h);
    return true;
  };
  found |= std::erase_if(waiting_, drop) > 0;
  found |= std::erase_if(swapped_, drop) > 0;
  return found;
}

int64_t Scheduler::TokensInCache() const {
  // Only running sequences hold device blocks, and a shared block has not been written since it
  // was shared (the first write copies it), so each of its `RefCount` holders sees the same fill:
  // counting fill / RefCount per holder counts every block once, with no per-call allocation.
  double total = 0;
  for (const auto& s : running_) {
    for (size_t i = 0; i < s->blocks.size(); ++i) {
      if (IsOffload(s->blocks[i])) continue;
      const int32_t in_block = std::clamp<int32_t>(s->num_computed - static_cast<int32_t>(i) * config_.block_size, 0,
                                                   config_.block_size);
      total += static_cast<double>(in_block) / pool_.RefCount(s->blocks[i]);
    }
  }
  return std::llround(total);
}

void Scheduler::CheckInvariants() const {
  pool_.CheckInvariants();
  host_pool_.CheckInvariants();
  offload_pool_.CheckInvariants();
  int64_t host = 0;
  std::map<int32_t, int32_t> holders;  // device block -> sequences holding it (forks share)
  for (const auto& s : running_) {
    KVS_CHECK_MSG(s->host_blocks.empty(), "a running sequence holds host blocks");
    KVS_CHECK_MSG(static_cast<int32_t>(s->blocks.size()) >= BlocksFor(s->num_computed), "a running sequence lacks blocks");
    for (BlockId b : s->blocks) ++holders[b.value];
  }
  int32_t offload_held = 0;
  for (const auto& [b, n] : holders) {
    KVS_CHECK_MSG(RefCountOf(BlockId{b}) == n, "a block's reference count != its holders");
    offload_held += IsOffload(BlockId{b}) ? 1 : 0;
  }
  for (const auto& s : waiting_) {
    KVS_CHECK_MSG(s->blocks.empty() && s->host_blocks.empty() && s->num_computed == 0, "a waiting sequence holds blocks");
  }
  for (const auto& s : swapped_) {
    KVS_CHECK_MSG(s->blocks.empty(), "a swapped sequence holds device blocks");
    KVS_CHECK_MSG(static_cast<int32_t>(s->host_blocks.size()) == BlocksFor(s->num_computed), "swapped blocks != computed");
    host += s->host_blocks.size();
  }
  KVS_CHECK_MSG(static_cast<int32_t>(holders.size()) - offload_held == pool_.num_blocks() - pool_.num_free(),
                "device blocks held != blocks in use");
  KVS_CHECK_MSG(offload_held == offload_blocks_held(), "offload blocks held != offload blocks in use");
  host += host_reads_.size();
  KVS_CHECK_MSG(host == host_pool_.num_blocks() - host_pool_.num_free(), "host blocks held != host blocks in use");
}

}  // namespace kvs
