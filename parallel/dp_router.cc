#include "parallel/dp_router.h"

namespace kvs {

int DpRouter::Route(int64_t blocks) {
  int best = 0;
  for (int g = 1; g < static_cast<int>(free_.size()); ++g) {
    if (free_[g] > free_[best]) best = g;
  }
  free_[best] -= blocks;
  return best;
}

}  // namespace kvs
