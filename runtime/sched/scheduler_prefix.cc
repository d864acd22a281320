// The scheduler's prefix cache (scheduler.h): finding the cached blocks of a new sequence's
// prompt on the device or in the host tier, and registering the blocks a sequence fills.
#include <algorithm>

#include "kernels/common/status_macros.h"
#include "runtime/kv/block_hash.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

uint64_t Scheduler::BlockHash(uint64_t parent, const Sequence& s, size_t block) const {
  const size_t bs = config_.block_size;
  return ChainBlockHash(parent, std::span<const int32_t>(s.tokens).subspan(block * bs, bs));
}

BlockId Scheduler::AllocateBlock(StepInput& in) {
  if (config_.host_prefix_cache) {
    const std::optional<uint64_t> hash = pool_.EvictionCandidateHash();
    if (hash && !host_pool_.Lookup(*hash) && host_pool_.num_free() > 0 &&
        config_.preemption.PreferSwap(1, config_.block_size)) {
      const BlockId victim = *pool_.Allocate();  // a parked block exists: its hash is the candidate
      const BlockId host = *host_pool_.Allocate();
      in.swap_out.push_back(victim.value);  // queued before this step's kernels reuse the block
      in.swap_out.push_back(host.value);
      host_pool_.Register(host, *hash);
      host_pool_.Release(host);  // parked: found by hash, and free for preemption swaps (LRU)
      ++host_parked_blocks_;
      return victim;
    }
  }
  const std::optional<BlockId> b = pool_.Allocate();
  KVS_CHECK_MSG(b.has_value(), "a KV block was allocated with none free");  // callers count first
  return *b;
}

void Scheduler::MatchPrefix(Sequence& s, StepInput& in) {
  const int32_t bs = config_.block_size;
  const auto max_blocks = static_cast<int32_t>((s.tokens.size() - 1) / bs);
  prefix_query_tokens_ += static_cast<int64_t>(s.tokens.size());
  pending_host_hits_.clear();
  pending_host_hit_tokens_ = 0;
  std::vector<uint64_t> hashes;
  uint64_t parent = config_.cache_salt;
  for (int32_t j = 0; j < max_blocks; ++j) hashes.push_back(parent = BlockHash(parent, s, j));
  // Where group g's block j is cached: 0 nowhere, 1 on the device, 2 in the host tier.
  auto where = [&](int32_t g, int32_t j, bool host_ok) -> int {
    const uint64_t h = GroupHash(hashes[j], g);
    if (pool_.Lookup(h)) return 1;
    return host_ok && host_pool_.Lookup(h) ? 2 : 0;
  };
  // The longest usable prefix of k blocks: every global group has blocks 0 .. k - 1, every
  // windowed group the blocks from its window's first (for the token at k * bs) to k - 1.
  auto longest = [&](bool host_ok) {
    int32_t k = max_blocks;
    for (int32_t g = 0; g < num_groups(); ++g) {
      if (groups_.windowed(g)) continue;
      int32_t run = 0;
      while (run < k && where(g, run, host_ok) != 0) ++run;
      k = run;
    }
    // Per windowed group, the cached run ending at each block; k is usable when each run
    // reaches back to the window's first block.
    std::vector<std::vector<int32_t>> runs;
    for (int32_t g = 0; g < num_groups(); ++g) {
      if (!groups_.windowed(g)) continue;
      std::vector<int32_t> run(k + 1, 0);  // run[j]: cached blocks ending just before block j
      for (int32_t j = 0; j < k; ++j) run[j + 1] = where(g, j, host_ok) != 0 ? run[j] + 1 : 0;
      runs.push_back(std::move(run));
    }
    for (; k > 0; --k) {
      bool ok = true;
      for (int32_t g = 0, w = 0; g < num_groups() && ok; ++g) {
        if (!groups_.windowed(g)) continue;
        ok = runs[w++][k] >= k - groups_.FirstLiveBlock(g, k * bs, bs);
      }
      if (ok) break;
    }
    return k;
  };
  int32_t k = longest(config_.host_prefix_cache);
  // Host-tier blocks are used only if the device can then take the whole prompt, so the
  // admission that follows cannot fail with their swap-ins already queued.
  // Free blocks they would take: one per host hit, and each parked device hit leaves the free count.
  auto blocks_taken = [&](int32_t blocks, int32_t& host) {
    int32_t n = 0;
    host = 0;
    for (int32_t g = 0; g < num_groups(); ++g) {
      for (int32_t j = groups_.FirstLiveBlock(g, blocks * bs, bs); j < blocks; ++j) {
        if (const std::optional<BlockId> b = pool_.Lookup(GroupHash(hashes[j], g))) {
          n += pool_.RefCount(*b) == 0 ? 1 : 0;
        } else {
          ++host;
        }
      }
    }
    return n + host;
  };
  if (config_.host_prefix_cache && k > 0) {
    const int32_t rest = num_groups() * (BlocksFor(static_cast<int32_t>(s.tokens.size())) - k);
    int32_t host = 0;
    const int32_t taken = blocks_taken(k, host);
    if (host > 0 && taken + rest > pool_.num_free()) k = longest(false);
  }
  // Device hits first, so that no allocation for a host hit evicts one of them.
  std::vector<std::pair<int32_t, int32_t>> from_host;  // (group, block)
  std::vector<bool> token_from_host(k, false);
  for (int32_t g = 0; g < num_groups(); ++g) {
    const int32_t first = groups_.FirstLiveBlock(g, k * bs, bs);
    s.blocks[g].assign(first, kNoBlock);
    for (int32_t j = first; j < k; ++j) {
      if (const std::optional<BlockId> cached = pool_.Lookup(GroupHash(hashes[j], g))) {
        pool_.Acquire(*cached);
        s.blocks[g].push_back(*cached);
      } else {
        s.blocks[g].push_back(kNoBlock);  // filled below
        from_host.emplace_back(g, j);
      }
    }
  }
  // The host blocks are taken before any device allocation, which may park an evicted device
  // block in the host tier and so evict a parked host block.
  std::vector<BlockId> hosts;
  for (const auto& [g, j] : from_host) {
    const BlockId host = *host_pool_.Lookup(GroupHash(hashes[j], g));
    host_pool_.Acquire(host);
    host_reads_.push_back(host);
    hosts.push_back(host);
  }
  for (size_t i = 0; i < from_host.size(); ++i) {
    const auto [g, j] = from_host[i];
    const uint64_t h = GroupHash(hashes[j], g);
    const BlockId host = hosts[i];
    const BlockId b = AllocateBlock(in);
    in.swap_in.push_back(host.value);
    in.swap_in.push_back(b.value);
    s.blocks[g][j] = b;
    pending_host_hits_.emplace_back(b, h);
    token_from_host[j] = true;
  }
  pending_host_hit_tokens_ = bs * std::count(token_from_host.begin(), token_from_host.end(), true);
  host_prefix_hit_tokens_ += pending_host_hit_tokens_;
  s.block_hashes.assign(hashes.begin(), hashes.begin() + k);
  s.num_computed = s.sealed_end = k * bs;  // matched blocks are sealed (registered only then)
  prefix_hit_tokens_ += s.num_computed;
}

void Scheduler::UnmatchPrefix(Sequence& s) {
  // Blocks filled from the host were never registered: they return to the pool as plain blocks.
  host_prefix_hit_tokens_ -= pending_host_hit_tokens_;
  pending_host_hits_.clear();
  pending_host_hit_tokens_ = 0;
  for (std::vector<BlockId>& list : s.blocks) {
    for (BlockId b : list) {
      if (b.value >= 0) ReleaseBlock(b);
    }
    list.clear();
  }
  prefix_hit_tokens_ -= s.num_computed;
  prefix_query_tokens_ -= static_cast<int64_t>(s.tokens.size());
  s.block_hashes.clear();
  s.num_computed = s.sealed_end = 0;
}

void Scheduler::RegisterFullBlocks(Sequence& s) {
  // Whole blocks; with channel-quantized KV, sealed ones (the ring's blocks are not written yet).
  const size_t full = static_cast<size_t>(sealed_blocks() ? s.sealed_end : s.num_computed) / config_.block_size;
  for (size_t i = s.block_hashes.size(); i < full; ++i) {
    const uint64_t h = BlockHash(i == 0 ? config_.cache_salt : s.block_hashes.back(), s, i);
    for (int32_t g = 0; g < num_groups(); ++g) {
      const BlockId b = s.blocks[g][i];
      if (b.value >= 0 && !IsOffload(b)) pool_.Register(b, GroupHash(h, g));  // offload blocks are not shared
    }
    s.block_hashes.push_back(h);
  }
}

}  // namespace kvs
