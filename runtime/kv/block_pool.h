// Accounting for the fixed-size KV blocks of one device's cache: which blocks are free and how
// many sequences reference each. Pure bookkeeping — no backend or CUDA header — so it can be
// stress-tested on the CPU. Reference counts let later features (prefix sharing, forks) share
// a block; a block returns to the free list when its count reaches zero.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace kvs {

// Strong index type for a KV block.
struct BlockId {
  int32_t value = -1;
  friend bool operator==(BlockId a, BlockId b) { return a.value == b.value; }
};

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }

  // Takes a free block (ref count 1), or nullopt when none is left.
  std::optional<BlockId> Allocate();
  // Adds a reference to an allocated block.
  void AddRef(BlockId b);
  // Drops a reference; the block is free again at zero.
  void Release(BlockId b);
  int32_t RefCount(BlockId b) const;

  // Aborts if the free list and the reference counts disagree (used by tests and debug runs).
  void CheckInvariants() const;

 private:
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_;  // stack: the most recently freed block is reused first
};

}  // namespace kvs
