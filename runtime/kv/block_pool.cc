#include "runtime/kv/block_pool.h"

#include "kernels/common/status_macros.h"

namespace kvs {

BlockPool::BlockPool(int32_t num_blocks)
    : ref_counts_(num_blocks, 0), hash_of_(num_blocks), parked_at_(num_blocks, parked_.end()) {
  KVS_CHECK(num_blocks >= 0);
  free_.reserve(num_blocks);
  for (int32_t i = num_blocks - 1; i >= 0; --i) free_.push_back(i);  // hand out 0, 1, 2, ...
}

std::optional<BlockId> BlockPool::Allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!parked_.empty()) {  // evict the least recently used cached block
    b = parked_.front();
    parked_.pop_front();
    parked_at_[b] = parked_.end();
    by_hash_.erase(*hash_of_[b]);
    hash_of_[b].reset();
  } else {
    return std::nullopt;
  }
  KVS_CHECK(ref_counts_[b] == 0);
  ref_counts_[b] = 1;
  return BlockId{b};
}

std::optional<uint64_t> BlockPool::EvictionCandidateHash() const {
  if (!free_.empty() || parked_.empty()) return std::nullopt;
  return hash_of_[parked_.front()];
}

void BlockPool::Register(BlockId b, uint64_t hash) {
  KVS_CHECK(b.value >= 0 && b.value < num_blocks() && ref_counts_[b.value] > 0);
  if (hash_of_[b.value] || by_hash_.contains(hash)) return;
  by_hash_[hash] = b.value;
  hash_of_[b.value] = hash;
}

std::optional<BlockId> BlockPool::Lookup(uint64_t hash) const {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  return BlockId{it->second};
}

void BlockPool::Acquire(BlockId b) {
  KVS_CHECK(b.value >= 0 && b.value < num_blocks() && hash_of_[b.value]);
  if (ref_counts_[b.value] == 0) {
    parked_.erase(parked_at_[b.value]);
    parked_at_[b.value] = parked_.end();
  }
  ++ref_counts_[b.value];
}

void BlockPool::AddRef(BlockId b) {
  KVS_CHECK(b.value >= 0 && b.value < num_blocks() && ref_counts_[b.value] > 0);
  ++ref_counts_[b.value];
}

void BlockPool::Release(BlockId b) {
  KVS_CHECK_MSG(b.value >= 0 && b.value < num_blocks() && ref_counts_[b.value] > 0,
                "release of a block that is not allocated");
  if (--ref_counts_[b.value] > 0) return;
  if (hash_of_[b.value]) {
    parked_at_[b.value] = parked_.insert(parked_.end(), b.value);  // most recently used last
  } else {
    free_.push_back(b.value);
  }
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
  for (int32_t b : parked_) {
    KVS_CHECK_MSG(!is_free[b] && hash_of_[b].has_value(), "a parked block is free-listed or unregistered");
    is_free[b] = 1;
  }
  for (size_t b = 0; b < ref_counts_.size(); ++b) {
    KVS_CHECK_MSG(ref_counts_[b] >= 0, "negative reference count");
    KVS_CHECK_MSG((ref_counts_[b] == 0) == (is_free[b] != 0), "free and parked lists and reference counts disagree");
    if (hash_of_[b]) KVS_CHECK_MSG(by_hash_.at(*hash_of_[b]) == static_cast<int32_t>(b), "hash index disagrees");
  }
  KVS_CHECK_MSG(by_hash_.size() <= ref_counts_.size(), "more hashes than blocks");
}

}  // namespace kvs
