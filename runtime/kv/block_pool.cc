#include "runtime/kv/block_pool.h"

#include "kernels/common/status_macros.h"

namespace kvs {

BlockPool::BlockPool(int32_t num_blocks) : ref_counts_(num_blocks, 0) {
  KVS_CHECK(num_blocks >= 0);
  free_.reserve(num_blocks);
  for (int32_t i = num_blocks - 1; i >= 0; --i) free_.push_back(i);  // hand out 0, 1, 2, ...
}

std::optional<BlockId> BlockPool::Allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  KVS_CHECK(ref_counts_[b] == 0);
  ref_counts_[b] = 1;
  return BlockId{b};
}

void BlockPool::AddRef(BlockId b) {
  KVS_CHECK(b.value >= 0 && b.value < num_blocks() && ref_counts_[b.value] > 0);
  ++ref_counts_[b.value];
}

void BlockPool::Release(BlockId b) {
  KVS_CHECK_MSG(b.value >= 0 && b.value < num_blocks() && ref_counts_[b.value] > 0,
                "release of a block that is not allocated");
  if (--ref_counts_[b.value] == 0) free_.push_back(b.value);
}

int32_t BlockPool::RefCount(BlockId b) const {
  KVS_CHECK(b.value >= 0 && b.value < num_blocks());
  return ref_counts_[b.value];
}

void BlockPool::CheckInvariants() const {
  std::vector<char> is_free(ref_counts_.size(), 0);
  for (int32_t b : free_) {
    KVS_CHECK_MSG(b >= 0 && b < num_blocks() && !is_free[b], "free list holds a bad or duplicate block");
    is_free[b] = 1;
  }
  for (size_t b = 0; b < ref_counts_.size(); ++b) {
    KVS_CHECK_MSG(ref_counts_[b] >= 0, "negative reference count");
    KVS_CHECK_MSG((ref_counts_[b] == 0) == (is_free[b] != 0), "free list and reference counts disagree");
  }
}

}  // namespace kvs
