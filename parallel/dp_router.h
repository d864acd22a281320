// The data-parallel router: global rank 0 sends each new request to one TP group. It picks the
// group with the most free KV capacity after what it has already been given (so a group with
// more memory, or less work, takes more), breaking ties by the lowest group index. A request's
// demand is the blocks its prompt plus max_tokens can occupy. The prefix-aware preference (a
// group that already caches the request's prefix) waits on prefix caching (issue 6).
#pragma once

#include <cstdint>
#include <vector>

namespace kvs {

class DpRouter {
 public:
  // capacity_blocks[g]: group g's KV blocks (the minimum over its ranks).
  explicit DpRouter(std::vector<int64_t> capacity_blocks) : free_(std::move(capacity_blocks)) {}
  // Chooses a group for a request that needs `blocks` and charges it.
  int Route(int64_t blocks);
  // Gives `blocks` back to group `g` (the request finished).
  void Release(int g, int64_t blocks) { free_[g] += blocks; }
  const std::vector<int64_t>& free_blocks() const { return free_; }

 private:
  std::vector<int64_t> free_;
};

}  // namespace kvs
