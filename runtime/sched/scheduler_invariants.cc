// What the scheduler's tests check after every step: every block and residual accounted for.
#include <cmath>
#include <map>

#include "kernels/common/status_macros.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

int64_t Scheduler::TokensInCache() const {
  // Only running sequences hold device blocks, and a shared block has not been written since it
  // was shared (the first write copies it), so each of its `RefCount` holders sees the same fill:
  // counting fill / RefCount per holder counts every block once, with no per-call allocation.
  double total = 0;
  for (const auto& s : running_) {
    for (const auto& list : s->blocks) {
      for (size_t i = 0; i < list.size(); ++i) {
        if (list[i].value < 0 || IsOffload(list[i])) continue;
        const int32_t in_block = std::clamp<int32_t>(s->num_computed - static_cast<int32_t>(i) * config_.block_size, 0,
                                                     config_.block_size);
        total += static_cast<double>(in_block) / pool_.RefCount(list[i]);
      }
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
  std::map<int32_t, std::pair<int32_t, size_t>> place;  // block -> (group, index): shared blocks sit alike
  // A windowed group holds at most the blocks of its window and one step's tokens.
  for (const auto& s : running_) {
    KVS_CHECK_MSG(s->host_blocks.empty(), "a running sequence holds host blocks");
    KVS_CHECK_MSG(static_cast<int32_t>(s->blocks.size()) == num_groups(), "a sequence's block lists != the KV groups");
    for (int32_t g = 0; g < num_groups(); ++g) {
      const auto& list = s->blocks[g];
      KVS_CHECK_MSG(static_cast<int32_t>(list.size()) >= BlocksFor(s->num_computed), "a running sequence lacks blocks");
      int32_t held = 0;
      for (size_t j = 0; j < list.size(); ++j) {
        const BlockId b = list[j];
        if (b.value < 0) continue;
        ++holders[b.value];
        ++held;
        const auto [at, first] = place.try_emplace(b.value, g, j);
        KVS_CHECK_MSG(first || at->second == std::make_pair(g, j), "a block shared at two places of the context");
      }
      if (groups_.windowed(g) && !config_.static_batching) {  // static batching reserves it all
        const int64_t bound =
            KvGroups::WindowSpanBlocks(groups_.window(g), config_.block_size, config_.max_tokens_per_step);
        KVS_CHECK_MSG(held <= bound, "a windowed group holds blocks beyond its window");
      } else {
        KVS_CHECK_MSG(held == static_cast<int32_t>(list.size()), "a global group released a block");
      }
    }
  }
  int32_t offload_held = 0;
  for (const auto& [b, n] : holders) {
    KVS_CHECK_MSG(RefCountOf(BlockId{b}) == n, "a block's reference count != its holders");
    offload_held += IsOffload(BlockId{b}) ? 1 : 0;
  }
  for (const auto& s : waiting_) {
    KVS_CHECK_MSG(HeldBlocks(s->blocks) == 0 && s->host_blocks.empty() && s->num_computed == 0,
                  "a waiting sequence holds blocks");
  }
  for (const auto& s : swapped_) {
    KVS_CHECK_MSG(HeldBlocks(s->blocks) == 0, "a swapped sequence holds device blocks");
    for (const auto& list : s->host_blocks) {
      KVS_CHECK_MSG(static_cast<int32_t>(list.size()) == BlocksFor(s->num_computed), "swapped blocks != computed");
    }
    host += HeldBlocks(s->host_blocks);
  }
  KVS_CHECK_MSG(static_cast<int32_t>(holders.size()) - offload_held == pool_.num_blocks() - pool_.num_free(),
                "device blocks held != blocks in use");
  KVS_CHECK_MSG(offload_held == offload_blocks_held(), "offload blocks held != offload blocks in use");
  // Residual blocks: each held by one running sequence or free.
  std::map<int32_t, int32_t> residuals;
  for (const auto& s : running_) {
    if (s->residual >= 0) ++residuals[s->residual];
  }
  for (const auto& s : running_) {
    KVS_CHECK_MSG(s->sealed_end % config_.block_size == 0 && s->sealed_end <= s->num_computed &&
                      (!sealed_blocks() || s->sealed_end >= ring().SealedEnd(s->num_computed)),
                  "a sequence's sealed positions disagree with its ring");
  }
  for (const auto& s : waiting_) KVS_CHECK_MSG(s->residual < 0, "a waiting sequence holds a residual block");
  for (const auto& s : swapped_) KVS_CHECK_MSG(s->residual < 0, "a swapped sequence holds a residual block");
  for (int32_t r : free_residuals_) ++residuals[r];
  for (const auto& [r, n] : residuals) KVS_CHECK_MSG(n == 1 && r < config_.residual_seqs, "a residual block held twice");
  KVS_CHECK_MSG(static_cast<int32_t>(residuals.size()) == config_.residual_seqs, "residual blocks lost");
  host += host_reads_.size();
  KVS_CHECK_MSG(host == host_pool_.num_blocks() - host_pool_.num_free(), "host blocks held != host blocks in use");
}

}  // namespace kvs
