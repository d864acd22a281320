#include "parallel/dp_router.h"

namespace kvs {

int DpRouter::Route(int64_t blocks, const std::vector<uint64_t>& prefix_hashes) {
  int best = -1;
  // Longest routed prefix first: hashes are cumulative, so the last match is the longest.
  for (uint64_t h : prefix_hashes) {
    auto it = owner_.find(h);
    if (it == owner_.end()) break;
    if (free_[it->second] >= blocks) best = it->second;
  }
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
  return best;
}

}  // namespace kvs
