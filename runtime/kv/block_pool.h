// Accounting for the fixed-size KV blocks of one device's cache: which blocks are free and how
// many sequences reference each. Pure bookkeeping — no backend or CUDA header — so it can be
// stress-tested on the CPU. Reference counts let forks and cached prefixes share a block.
//
// Prefix caching: a full block may be registered under a hash of its contents (its tokens and
// every token before them). When its last reference goes, a registered block is not wiped but
// parked, least recently used first; Lookup finds it again and Acquire revives it. Parked
// blocks count as free: Allocate hands out never-registered blocks first, then evicts the
// least recently used parked block (dropping its hash).
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"

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
  // Blocks an Allocate can return: never-registered free blocks plus parked cached ones.
  int32_t num_free() const { return static_cast<int32_t>(free_.size() + parked_.size()); }
  int32_t num_cached() const { return static_cast<int32_t>(by_hash_.size()); }

  // Takes a free block (ref count 1), or nullopt when none is left.
  std::optional<BlockId> Allocate();
  // Prefix caching: records that full block `b` holds the contents identified by `hash`
  // (ignored if another block already does).
  void Register(BlockId b, uint64_t hash);
  // The block registered under `hash`, held or parked.
  std::optional<BlockId> Lookup(uint64_t hash) const;
  // A reference to a block found by Lookup, reviving it if it was parked.
  void Acquire(BlockId b);
  // Adds a reference to an allocated block.
  void AddRef(BlockId b);
  // The hash of the cached block the next Allocate would evict (none while never-registered
  // blocks are free): the scheduler copies it to the host tier first.
  std::optional<uint64_t> EvictionCandidateHash() const;
  // Drops a reference; the block is free again at zero.
  void Release(BlockId b);
  int32_t RefCount(BlockId b) const;

  // Aborts if the free list and the reference counts disagree (used by tests and debug runs).
  void CheckInvariants() const;

 private:
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_;  // stack: the most recently freed block is reused first
  // Prefix cache: hash -> block, each registered block's hash, parked blocks in LRU order.
  absl::flat_hash_map<uint64_t, int32_t> by_hash_;
  std::vector<std::optional<uint64_t>> hash_of_;
  std::list<int32_t> parked_;  // front: least recently used
  std::vector<std::list<int32_t>::iterator> parked_at_;
};

}  // namespace kvs
