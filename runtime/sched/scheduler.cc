#include "runtime/sched/scheduler.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

Scheduler::Scheduler(SchedulerConfig config, int32_t num_blocks)
    : config_(config), pool_(num_blocks), host_pool_(config.num_host_blocks), offload_pool_(config.num_offload_blocks),
      groups_(config.kv_groups.num_groups() > 0 ? config.kv_groups : KvGroups(1, {})) {
  KVS_CHECK_MSG(
      config_.block_size > 0 && config_.max_seqs > 0 && config_.max_tokens_per_step > 0 && config_.max_model_len > 0,
      "scheduler limits must be positive (max_model_len: resolved by the engine)");
  group_slots_.resize(num_groups());
  for (int32_t r = config_.residual_seqs - 1; r >= 0; --r) free_residuals_.push_back(r);
}

void Scheduler::DropResidual(Sequence& s) {
  if (s.residual < 0) return;
  free_residuals_.push_back(s.residual);
  s.residual = -1;
  s.holds_sink = false;
}

bool Scheduler::HoldsWindow(const std::vector<std::vector<BlockId>>& lists, int32_t first_query) const {
  const int32_t end = first_query / config_.block_size;  // whole blocks before the query
  for (int32_t g = 0; g < num_groups(); ++g) {
    for (int32_t j = groups_.FirstLiveBlock(g, first_query, config_.block_size); j < end; ++j) {
      if (j >= static_cast<int32_t>(lists[g].size()) || lists[g][j].value < 0) return false;
    }
  }
  return true;
}

void Scheduler::DropPartialBlock(Sequence& s) {
  // Only sealed blocks hold their tokens; the ring's are gone with the residual.
  const int32_t whole = s.sealed_end / config_.block_size;
  for (std::vector<BlockId>& list : s.blocks) {
    while (static_cast<int32_t>(list.size()) > whole) {
      if (list.back().value >= 0) ReleaseBlock(list.back());
      list.pop_back();
    }
  }
  s.num_computed = s.sealed_end = whole * config_.block_size;
}

uint64_t Scheduler::GroupHash(uint64_t hash, int32_t g) {
  if (g == 0) return hash;
  // splitmix64's finalizer over the hash and the group: distinct keys per group.
  uint64_t x = hash + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(g);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

int32_t Scheduler::HeldBlocks(const std::vector<std::vector<BlockId>>& lists) {
  int32_t n = 0;
  for (const auto& list : lists) {
    for (BlockId b : list) n += b.value >= 0 ? 1 : 0;
  }
  return n;
}

void Scheduler::ReleaseOutOfWindow(Sequence& s) {
  for (int32_t g = 0; g < num_groups(); ++g) {
    if (!groups_.windowed(g)) continue;
    std::vector<BlockId>& list = s.blocks[g];
    const auto first = std::min<size_t>(groups_.FirstLiveBlock(g, s.num_computed, config_.block_size), list.size());
    for (size_t j = 0; j < first; ++j) {
      if (list[j].value < 0) continue;
      ReleaseBlock(list[j]);  // a full, registered block parks in the prefix cache
      list[j] = kNoBlock;
    }
  }
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
  const auto need = static_cast<int32_t>(groups_.BlocksHeld(longest, config_.block_size, config_.max_tokens_per_step));
  if (need > pool_.num_blocks() + offload_pool_.num_blocks()) {
    return absl::ResourceExhaustedError(RefusalMessage(r.id, longest, need));
  }
  auto s = std::make_unique<Sequence>();
  if (need > pool_.num_blocks()) {
    s->may_offload = true;
    NoteOffload(r.id, longest, need);
  }
  s->tokens = r.prompt_ids;
  s->blocks.resize(num_groups());
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
    // A block this step demoted into is no longer that demotion's: a later holder's preemption
    // must not read it back from the old device block (Preempt).
    std::erase_if(demoted_this_step_, [&](const auto& d) { return d.second == b.value; });
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
  for (std::vector<BlockId>& list : s.blocks) {
    for (size_t i = list.size(); i-- > 0;) {
      const BlockId b = list[i];
      if (b.value < 0 || IsOffload(b) || pool_.RefCount(b) > 1) continue;  // a shared block stays for its siblings
      const BlockId moved = AllocateOffload();
      ++demoted_blocks_;
      // Queued before this step's kernels, which may already write the freed block.
      in.copy_blocks.push_back(b.value);
      in.copy_blocks.push_back(moved.value);
      demoted_this_step_.emplace_back(b.value, moved.value);
      list[i] = moved;
      pool_.Release(b);
      return true;
    }
  }
  return false;
}

bool Scheduler::Grow(Sequence& s, int32_t tokens, StepInput& in, bool offload) {
  // Whatever this step schedules, the blocks before the window are never read again.
  ReleaseOutOfWindow(s);
  const int32_t want = BlocksFor(tokens);
  // Held blocks this step writes into that a sibling also holds: each needs a private copy.
  std::vector<std::pair<int32_t, int32_t>> shared;  // (group, block)
  int32_t need = 0;
  for (int32_t g = 0; g < num_groups(); ++g) {
    const auto have = static_cast<int32_t>(s.blocks[g].size());
    for (int32_t i = s.num_computed / config_.block_size; i < std::min(have, want); ++i) {
      if (RefCountOf(s.blocks[g][i]) > 1) shared.emplace_back(g, i);
    }
    need += std::max(want - have, 0);
  }
  need += static_cast<int32_t>(shared.size());
  if (need > FreeFor(offload)) return false;
  for (const auto& [g, i] : shared) {
    const BlockId copy = AllocateFor(offload, in);
    in.copy_blocks.push_back(s.blocks[g][i].value);
    in.copy_blocks.push_back(copy.value);
    ReleaseBlock(s.blocks[g][i]);  // still held by the sibling, so its contents stay for the copy
    s.blocks[g][i] = copy;
    ++copied_blocks_;
  }
  for (std::vector<BlockId>& list : s.blocks) {
    while (static_cast<int32_t>(list.size()) < want) list.push_back(AllocateFor(offload, in));
  }
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
  // Channel-quantized KV: the parent's newest tokens are in its residual ring, which the child
  // cannot share: it keeps the sealed blocks and recomputes the rest.
  if (sealed_blocks()) {
    int32_t whole = parent.sealed_end / config_.block_size;
    // A windowed group may have given back blocks the child's first step would read: then the
    // child recomputes everything.
    if (!HoldsWindow(child->blocks, whole * config_.block_size)) whole = 0;
    for (auto& list : child->blocks) list.resize(std::min<size_t>(list.size(), whole));
    child->block_hashes.resize(std::min<size_t>(child->block_hashes.size(), whole));
    child->num_computed = child->sealed_end = whole * config_.block_size;
  }
  for (const auto& list : child->blocks) {
    for (BlockId b : list) {
      if (b.value >= 0) AddRefBlock(b);
    }
  }
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
  bool recompute = false;
  if (sealed_blocks()) {  // its newest tokens (in the residual) are recomputed on resume
    DropResidual(*s);
    DropPartialBlock(*s);
    // Resuming from a whole block needs the window before it, which a windowed group may have
    // given back: then only recomputing restores it.
    recompute = !HoldsWindow(s->blocks, s->num_computed);
  }
  // Where each block's contents are when this step's swap-outs run: blocks this step moved to the
  // offload tier are not copied yet (copies run after swap-outs), so those copies are dropped and
  // a swap-out reads the device block they would have read.
  std::vector<std::vector<int32_t>> contents_at(num_groups());
  for (int32_t g = 0; g < num_groups(); ++g) {
    for (BlockId b : s->blocks[g]) contents_at[g].push_back(b.value);
  }
  for (const auto& [from, to] : demoted_this_step_) {
    for (std::vector<int32_t>& list : contents_at) {
      const auto it = std::find(list.begin(), list.end(), to);
      if (it == list.end()) continue;
      *it = from;
      for (size_t k = 0; k < in.copy_blocks.size(); k += 2) {
        if (in.copy_blocks[k] == from && in.copy_blocks[k + 1] == to) {
          in.copy_blocks.erase(in.copy_blocks.begin() + k, in.copy_blocks.begin() + k + 2);
          break;
        }
      }
    }
  }
  const int32_t blocks = HeldBlocks(s->blocks);
  if (!recompute && blocks > 0 && blocks <= host_pool_.num_free() &&
      config_.preemption.PreferSwap(blocks, s->num_computed)) {
    s->host_blocks.assign(num_groups(), {});
    for (int32_t g = 0; g < num_groups(); ++g) {
      for (size_t i = 0; i < s->blocks[g].size(); ++i) {
        const BlockId b = s->blocks[g][i];
        if (b.value < 0) {  // released out of the window: nothing to keep
          s->host_blocks[g].push_back(kNoBlock);
          continue;
        }
        const BlockId h = *host_pool_.Allocate();
        in.swap_out.push_back(contents_at[g][i]);
        in.swap_out.push_back(h.value);
        s->host_blocks[g].push_back(h);
        ReleaseBlock(b);
      }
      s->blocks[g].clear();
    }
    ++swap_preemptions_;
    // Victims go newest first, so each one is older than those already swapped: it resumes first.
    swapped_.push_front(std::move(s));
    return;
  }
  for (std::vector<BlockId>& list : s->blocks) {
    for (BlockId b : list) {
      if (b.value >= 0) ReleaseBlock(b);
    }
    list.clear();
  }
  s->block_hashes.clear();
  s->num_computed = s->sealed_end = 0;
  waiting_.push_front(std::move(s));
}

void Scheduler::Resume(StepInput& in) {
  while (!swapped_.empty() && static_cast<int32_t>(running_.size()) < config_.max_seqs) {
    Sequence& s = *swapped_.front();
    // Its blocks back, plus room for the token it will compute next.
    int32_t need = HeldBlocks(s.host_blocks);
    for (const auto& list : s.host_blocks) {
      need += std::max(BlocksFor(s.num_computed + 1) - static_cast<int32_t>(list.size()), 0);
    }
    if (need > FreeFor(s.may_offload)) return;
    for (int32_t g = 0; g < num_groups(); ++g) {
      for (BlockId h : s.host_blocks[g]) {
        if (h.value < 0) {
          s.blocks[g].push_back(kNoBlock);
          continue;
        }
        const BlockId b = AllocateFor(s.may_offload, in);
        in.swap_in.push_back(h.value);
        in.swap_in.push_back(b.value);
        s.blocks[g].push_back(b);
        // Freed once the step is submitted: a swap-out queued later in this step (they all run
        // before the swap-ins) must not reuse it.
        host_reads_.push_back(h);
      }
    }
    s.host_blocks.clear();
    running_.push_back(std::move(swapped_.front()));
    swapped_.pop_front();
  }
}

void Scheduler::StepSubmitted() {
  for (BlockId h : host_reads_) host_pool_.Release(h);
  host_reads_.clear();
}

int32_t Scheduler::Emit(Sequence& s, int32_t n, int32_t budget, StepInput& in, std::vector<ScheduledSeq>& out) {
  const int32_t bs = config_.block_size, end = s.num_computed + n;
  const KvResidualRing ring = this->ring();
  const int32_t seal_below = ring.SealedEnd(end);  // channel-quantized KV: positions the seal writes
  if (sealed_blocks() && s.residual < 0) {
    KVS_CHECK_MSG(!free_residuals_.empty(), "more running sequences than residual blocks");
    s.residual = free_residuals_.back();
    free_residuals_.pop_back();
    // From position 0 it writes its first block to the sink; resumed from sealed blocks (a prefix
    // hit, a swap-in, a fork), the sink holds another sequence's tokens until a refill.
    s.holds_sink = ring.sink && s.num_computed == 0;
  }
  // Resumed past its first block without the sink: refill it first, when the step has the tokens
  // (else a later step does; until then it reads its sealed first block).
  if (sealed_blocks() && ring.sink && !s.holds_sink && s.num_computed >= bs && budget >= bs) {
    EmitSinkRefill(s, in, out);
    return bs;
  }
  for (int32_t k = s.num_computed; k < end; ++k) {
    in.token_ids.push_back(s.tokens[k]);
    in.positions.push_back(k);
    for (int32_t g = 0; g < num_groups(); ++g) {
      if (!sealed_blocks()) {
        group_slots_[g].push_back(s.blocks[g][k / bs].value * bs + k % bs);
      } else if (k < seal_below && !(s.holds_sink && ring.InSink(k))) {
        group_slots_[g].push_back(-1);  // the ring lets go of it after this step: written by the seal
      } else {                          // this group's ring: residual * groups + g
        group_slots_[g].push_back(-(2 + static_cast<int32_t>(ring.Slot(s.residual * num_groups() + g, k))));
      }
    }
  }
  if (sealed_blocks()) {
    in.residual.push_back(s.residual);
    in.sealed.push_back(s.sealed_end);  // before this step: where its seal starts
    in.sink.push_back(s.holds_sink ? 1 : 0);
    s.sealed_end = std::max(s.sealed_end, seal_below);
  }
  s.num_computed += n;
  if (config_.prefix_caching && !config_.static_batching) RegisterFullBlocks(s);
  in.query_start.push_back(in.num_tokens());
  in.context_len.push_back(s.num_computed);
  const bool samples = s.num_computed == static_cast<int32_t>(s.tokens.size());
  if (samples) in.logit_rows.push_back(in.num_tokens() - 1);
  out.push_back({&s, n, samples});
  return n;
}

void Scheduler::EmitSinkRefill(Sequence& s, StepInput& in, std::vector<ScheduledSeq>& out) {
  const int32_t bs = config_.block_size;
  const KvResidualRing ring = this->ring();
  for (int32_t k = 0; k < bs; ++k) {
    in.token_ids.push_back(s.tokens[k]);
    in.positions.push_back(k);
    for (int32_t g = 0; g < num_groups(); ++g) {
      group_slots_[g].push_back(-(2 + static_cast<int32_t>(ring.Slot(s.residual * num_groups() + g, k))));
    }
  }
  in.residual.push_back(s.residual);
  in.sealed.push_back(bs);  // block 0 is sealed already: the seal writes nothing
  in.sink.push_back(1);     // its queries read keys [0, block_size) from the sink being written
  in.query_start.push_back(in.num_tokens());
  in.context_len.push_back(bs);
  s.holds_sink = true;
  ++sink_refills_;
  out.push_back({&s, bs, /*samples=*/false, /*sink_refill=*/true});
}

std::vector<ScheduledSeq> Scheduler::Schedule(StepInput& in) {
  in.Clear();
  for (std::vector<int32_t>& slots : group_slots_) slots.clear();
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
      budget -= Emit(s, n, budget, in, out);
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
      budget -= Emit(s, n, budget, in, out);
    }
  }

  // Static batching admits only into an empty batch (those admitted this step join it).
  const bool admit = !config_.static_batching || batch_was_empty;
  while (admit && swapped_.empty() && !waiting_.empty() && budget > 0) {
    Sequence& s = *waiting_.front();
    // Room for the request's forks too (they join when its prompt is done).
    const int32_t seats = s.forked ? 1 : s.request.params.n;
    if (static_cast<int32_t>(running_.size()) + seats > config_.max_seqs) break;
    const bool match = config_.prefix_caching && !config_.static_batching &&
                       std::all_of(s.blocks.begin(), s.blocks.end(), [](const auto& list) { return list.empty(); });
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
    budget -= Emit(s, n, budget, in, out);
  }

  // Block table rows per group, padded to the longest scheduled sequence; released blocks 0.
  int32_t width = 1;
  for (const ScheduledSeq& ss : out) {
    for (const auto& list : ss.seq->blocks) width = std::max<int32_t>(width, static_cast<int32_t>(list.size()));
  }
  in.max_blocks_per_seq = width;
  in.num_kv_groups = num_groups();
  const size_t group_table = out.size() * width;
  in.block_table.assign(num_groups() * group_table, 0);
  for (int32_t g = 0; g < num_groups(); ++g) {
    for (size_t r = 0; r < out.size(); ++r) {
      const auto& blocks = out[r].seq->blocks[g];
      for (size_t j = 0; j < blocks.size(); ++j) {
        in.block_table[g * group_table + r * width + j] = std::max(blocks[j].value, 0);
      }
    }
    in.slot_mapping.insert(in.slot_mapping.end(), group_slots_[g].begin(), group_slots_[g].end());
  }
  return out;
}

void Scheduler::Finish(Sequence* seq) {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].get() != seq) continue;
    DropResidual(*seq);
    for (const auto& list : seq->blocks) {
      for (BlockId b : list) {
        if (b.value >= 0) ReleaseBlock(b);
      }
    }
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
    DropResidual(*s);
    for (const auto& list : s->blocks) {
      for (BlockId b : list) {
        if (b.value >= 0) ReleaseBlock(b);
      }
    }
    for (const auto& list : s->host_blocks) {
      for (BlockId h : list) {
        if (h.value >= 0) host_pool_.Release(h);
      }
    }
    return true;
  };
  found |= std::erase_if(waiting_, drop) > 0;
  found |= std::erase_if(swapped_, drop) > 0;
  return found;
}

}  // namespace kvs
