#include "runtime/kv/block_pool.h"

#include <random>

#include "gtest/gtest.h"

namespace kvs {
namespace {

TEST(BlockPoolTest, AllocatesEveryBlockOnceThenRunsOut) {
  BlockPool pool(5);
  std::vector<BlockId> got;
  for (int i = 0; i < 5; ++i) got.push_back(*pool.Allocate());
  EXPECT_FALSE(pool.Allocate().has_value());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i].value, i);
  pool.Release(got[2]);
  EXPECT_EQ(pool.Allocate()->value, 2);
  pool.CheckInvariants();
}

TEST(BlockPoolTest, SharedBlocksReturnOnlyAtZeroReferences) {
  BlockPool pool(2);
  BlockId b = *pool.Allocate();
  pool.AddRef(b);
  EXPECT_EQ(pool.RefCount(b), 2);
  pool.Release(b);
  EXPECT_EQ(pool.num_free(), 1);
  pool.Release(b);
  EXPECT_EQ(pool.num_free(), 2);
}

TEST(BlockPoolDeathTest, DoubleReleaseAborts) {
  BlockPool pool(1);
  BlockId b = *pool.Allocate();
  pool.Release(b);
  EXPECT_DEATH(pool.Release(b), "release of a block that is not allocated");
}

TEST(BlockPoolTest, RandomStressKeepsTheInvariants) {
  BlockPool pool(64);
  std::mt19937 rng(11);
  std::vector<BlockId> held;
  for (int step = 0; step < 20000; ++step) {
    const int op = rng() % 3;
    if (op == 0) {
      if (auto b = pool.Allocate()) held.push_back(*b);
      else EXPECT_EQ(pool.num_free(), 0);
    } else if (op == 1 && !held.empty()) {
      const size_t i = rng() % held.size();
      pool.AddRef(held[i]);
      held.push_back(held[i]);
    } else if (!held.empty()) {
      const size_t i = rng() % held.size();
      pool.Release(held[i]);
      held.erase(held.begin() + i);
    }
    if (step % 97 == 0) pool.CheckInvariants();
  }
  for (BlockId b : held) pool.Release(b);
  pool.CheckInvariants();
  EXPECT_EQ(pool.num_free(), 64);
}

}  // namespace
}  // namespace kvs
