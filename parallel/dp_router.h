// The data-parallel router: global rank 0 sends each new request to one TP group.
//   1. Prefix affinity: if a group was already sent a request with the same leading blocks, it
//      holds (or will hold) their KV in its prefix cache; the group with the longest such match
//      wins, as long as it has room for the request and is not much busier than the least busy
//      group (more than kAffinitySlack or a quarter more requests in flight): a prompt prefix
//      every request shares (a system message) must not pull all traffic to one group.
//   2. Otherwise the group with the most free KV capacity after what it has already been given
//      (so a group with more memory, or less work, takes more); ties go to the lowest index.
// A request's demand is the blocks its prompt plus max_tokens can occupy.
// `--dp-routing round-robin` sends request i to group i mod G instead (the baseline the KV-aware
// rule is measured against); it still counts each group's charge.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace kvs {

enum class DpRouting { kKvAware, kRoundRobin };
// "kv" or "round-robin"; anything else is an error naming the flag.
absl::StatusOr<DpRouting> ParseDpRouting(std::string_view s);

class DpRouter {
 public:
  // capacity_blocks[g]: group g's KV blocks (the minimum over its ranks).
  static constexpr int64_t kAffinitySlack = 2;
  explicit DpRouter(std::vector<int64_t> capacity_blocks, DpRouting routing = DpRouting::kKvAware)
      : free_(std::move(capacity_blocks)), in_flight_(free_.size(), 0), routing_(routing) {}
  // Chooses a group for a request that needs `blocks` and charges it. `prefix_hashes` are the
  // hashes of its leading full blocks (each covering the whole prefix up to it), or empty.
  int Route(int64_t blocks, const std::vector<uint64_t>& prefix_hashes = {});
  // Gives `blocks` back to group `g` (the request finished).
  void Release(int g, int64_t blocks) {
    free_[g] += blocks;
    --in_flight_[g];
  }
  const std::vector<int64_t>& free_blocks() const { return free_; }
  int64_t affinity_hits() const { return affinity_hits_; }

 private:
  std::vector<int64_t> free_;
  std::vector<int64_t> in_flight_;  // requests routed and not yet released, per group
  absl::flat_hash_map<uint64_t, int> owner_;  // leading-block hash -> group first sent it
  int64_t affinity_hits_ = 0;
  DpRouting routing_;
  int64_t routed_ = 0;  // requests routed so far (round-robin's turn)
};

}  // namespace kvs
