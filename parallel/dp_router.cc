#include "parallel/dp_router.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_format.h"

namespace kvs {

absl::StatusOr<DpRouting> ParseDpRouting(std::string_view s) {
  if (s == "kv") return DpRouting::kKvAware;
  if (s == "round-robin") return DpRouting::kRoundRobin;
  return absl::InvalidArgumentError(
      absl::StrFormat("--dp-routing must be kv or round-robin, got '%s'", std::string(s)));
}

int DpRouter::Route(int64_t blocks, const std::vector<uint64_t>& prefix_hashes) {
  if (routing_ == DpRouting::kRoundRobin) {
    const int g = static_cast<int>(routed_++ % static_cast<int64_t>(free_.size()));
    free_[g] -= blocks;
    ++in_flight_[g];
    return g;
  }
  int best = -1;
  // Longest routed prefix first: hashes are cumulative, so the last match is the longest.
  for (uint64_t h : prefix_hashes) {
    auto it = owner_.find(h);
    if (it == owner_.end()) break;
    if (free_[it->second] >= blocks) best = it->second;
  }
  // Affinity only while that group is not much busier than the least busy one: a shared system
  // prompt would otherwise send every request to the group that saw it first.
  const int64_t least = *std::min_element(in_flight_.begin(), in_flight_.end());
  if (best >= 0 && in_flight_[best] > least + std::max<int64_t>(kAffinitySlack, least / 4)) best = -1;
  if (best >= 0) {
    ++affinity_hits_;
  } else {
    best = 0;
    for (int g = 1; g < static_cast<int>(free_.size()); ++g) {
      if (free_[g] > free_[best]) best = g;
    }
  }
  for (uint64_t h : prefix_hashes) owner_.try_emplace(h, best);
  free_[best] -= blocks;
  ++in_flight_[best];
  return best;
}

}  // namespace kvs
