#include "parallel/dp_router.h"

#include <algorithm>

namespace kvs {

int DpRouter::Route(int64_t blocks, const std::vector<uint64_t>& prefix_hashes) {
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
