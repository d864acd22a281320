// How layers share KV blocks when some attend to a sliding window: the groups of the model
// families kvshard runs, the blocks a sequence holds in them, and the cache's slab buffers.
#include "runtime/kv/kv_groups.h"

#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/model/model_config.h"

namespace kvs {
namespace {

TEST(KvGroupsTest, AModelWithoutWindowsIsOneGlobalGroupOfAllItsLayers) {
  const KvGroups g(32, {});
  EXPECT_EQ(g.num_groups(), 1);
  EXPECT_EQ(g.slots(), 32);
  EXPECT_FALSE(g.any_windowed());
  for (int32_t l = 0; l < 32; ++l) {
    EXPECT_EQ(g.group_of(l), 0);
    EXPECT_EQ(g.slot_of(l), l);
  }
  // Every block of the context, as before windows existed.
  EXPECT_EQ(g.BlocksHeld(1000, 16, 512), 63);
  EXPECT_EQ(g.LongestFitting(63, 16, 512, 1 << 20), 63 * 16);
}

TEST(KvGroupsTest, Gemma3SplitsIntoOneGlobalAndFiveWindowedGroupsOfThree) {
  // Gemma 3 270M: 18 layers, every 6th global, window 512.
  const std::vector<int32_t> windows = WindowsEveryNthGlobal(18, 512, 6);
  const KvGroups g(18, windows);
  EXPECT_EQ(g.slots(), 3);
  ASSERT_EQ(g.num_groups(), 6);
  EXPECT_FALSE(g.windowed(0));
  for (int32_t k = 1; k < 6; ++k) EXPECT_EQ(g.window(k), 512);
  EXPECT_EQ(g.Describe(), "1 global + 5 windowed (512) groups of 3 layers");
  // The global layers 5, 11, 17 are group 0's slots 0, 1, 2; the windowed ones fill groups 1..5 in
  // layer order.
  EXPECT_EQ(g.group_of(5), 0);
  EXPECT_EQ(g.slot_of(5), 0);
  EXPECT_EQ(g.slot_of(17), 2);
  EXPECT_EQ(g.group_of(0), 1);
  EXPECT_EQ(g.group_of(3), 2);  // 0, 1, 2 | 3, 4, 6 | ...
  EXPECT_EQ(g.slot_of(6), 2);
  // Each (group, slot) pair belongs to one layer.
  std::vector<int> seen(6 * 3, 0);
  for (int32_t l = 0; l < 18; ++l) ++seen[g.group_of(l) * 3 + g.slot_of(l)];
  for (int n : seen) EXPECT_EQ(n, 1);
  // 32K tokens: 2,048 global blocks and, per windowed group, the window plus one 512-token step.
  const int64_t span = (511 + 512 + 15) / 16 + 1;
  EXPECT_EQ(g.BlocksHeld(32768, 16, 512), 2048 + 5 * span);
  EXPECT_EQ(g.BlocksHeld(100, 16, 512), 6 * 7);  // shorter than the window: every group holds it all
}

TEST(KvGroupsTest, UnevenCountsLeaveUnusedSlotsInTheLastGroup) {
  // Gemma 3 1B's shape: 26 layers, every 6th global: 4 global, 22 windowed -> groups of 4, the
  // last windowed group with two layers (two slots unused).
  const KvGroups g(26, WindowsEveryNthGlobal(26, 512, 6));
  EXPECT_EQ(g.slots(), 4);
  EXPECT_EQ(g.num_groups(), 1 + 6);
  int32_t in_last = 0;
  for (int32_t l = 0; l < 26; ++l) in_last += g.group_of(l) == 6 ? 1 : 0;
  EXPECT_EQ(in_last, 2);
}

TEST(KvGroupsTest, EveryLayerWindowedHoldsABoundedShareAtAnyLength) {
  // Mistral 7B v0.1: 32 layers, all with a 4,096-token window: any context fits a bounded cache.
  const KvGroups g(32, std::vector<int32_t>(32, 4096));
  EXPECT_EQ(g.num_groups(), 1);
  EXPECT_TRUE(g.windowed(0));
  const int64_t bound = g.BlocksHeld(int64_t{1} << 30, 16, 512);
  EXPECT_EQ(bound, (4095 + 512 + 15) / 16 + 1);
  EXPECT_EQ(g.BlocksHeld(int64_t{1} << 20, 16, 512), bound);
  EXPECT_EQ(g.LongestFitting(bound, 16, 512, 1 << 30), 1 << 30);  // the cap: no length is too long
  EXPECT_EQ(g.LongestFitting(bound - 1, 16, 512, 1 << 30), (bound - 1) * 16);  // one block short: whole blocks only
}

TEST(KvGroupsTest, TheFirstLiveBlockIsTheBlockOfTheWindowsFirstKey) {
  const KvGroups g(2, std::vector<int32_t>{8, 0});
  ASSERT_TRUE(g.windowed(1));
  EXPECT_EQ(g.FirstLiveBlock(0, 1000, 4), 0);  // global
  EXPECT_EQ(g.FirstLiveBlock(1, 0, 4), 0);
  EXPECT_EQ(g.FirstLiveBlock(1, 8, 4), 0);     // the query at 8 reads keys 1..8
  EXPECT_EQ(g.FirstLiveBlock(1, 11, 4), 1);    // keys 4..11
  EXPECT_EQ(g.FirstLiveBlock(1, 12, 4), 1);    // keys 5..12
  EXPECT_EQ(g.FirstLiveBlock(1, 15, 4), 2);    // keys 8..15
}

TEST(KvGroupsTest, LongestFittingIsTheInverseOfBlocksHeld) {
  const KvGroups g(6, std::vector<int32_t>{5, 5, 0, 5, 5, 0});  // groups of 2: 1 global, 2 windowed
  for (int64_t blocks = 1; blocks < 200; ++blocks) {
    const int64_t t = g.LongestFitting(blocks, 4, 8, 100000);
    EXPECT_LE(g.BlocksHeld(t, 4, 8), blocks) << blocks;
    EXPECT_GT(g.BlocksHeld(t + 1, 4, 8), blocks) << blocks;
  }
}

// The cache allocates one K and one V buffer per slab slot, and the layers at one slot of
// different groups read the same buffer (their blocks tell them apart), each with its window.
TEST(KvGroupsTest, TheCacheHasABufferPerSlotAndEachLayerItsWindow) {
  ModelConfig c;
  c.num_layers = 6;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.layer_windows = {5, 5, 0, 5, 5, 0};
  CpuBackend backend(size_t{64} << 20);
  auto cache = KvCache::Create(backend, c, KvDType::kF32, 4, 10);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const KvGroups& g = cache->groups();
  EXPECT_EQ(g.slots(), 2);
  EXPECT_EQ(cache->move_slots(), 2);
  EXPECT_EQ(cache->bytes_per_block(), KvCache::BytesPerBlock(c, KvDType::kF32, 4));
  EXPECT_EQ(cache->bytes_per_block(), 2u * 2 * (4 * 2 * 8 * 4));  // 2 slots x K,V x (4 tokens x 2 heads x 8 x f32)
  EXPECT_EQ(cache->bytes(), 10 * cache->bytes_per_block());
  for (int32_t l = 0; l < 6; ++l) {
    for (int32_t m = 0; m < 6; ++m) {
      const bool same_slot = g.slot_of(l) == g.slot_of(m);
      EXPECT_EQ(cache->Layer(l).k == cache->Layer(m).k, same_slot) << l << " " << m;
    }
    EXPECT_EQ(cache->Layer(l).window, c.layer_windows[l]);
  }
}

// Channel-quantized KV's residual ring: whole blocks holding at least the tokens asked for, one
// more for the block being filled, and never more than the smallest window holds; where it keeps
// any, one more block (the sink) for the sequence's first block.
TEST(KvGroupsTest, ResidualRingsKeepWholeBlocksWithinTheSmallestWindow) {
  const KvGroups global(4, {});
  auto rotating = [](const KvResidualRing& r) { return r.rotating(); };
  EXPECT_EQ(rotating(global.Ring(0, 16)), 1);  // each block sealed when whole
  EXPECT_FALSE(global.Ring(0, 16).sink);
  EXPECT_EQ(global.Ring(0, 16).blocks, 1);
  EXPECT_EQ(rotating(global.Ring(1, 16)), 2);
  EXPECT_EQ(rotating(global.Ring(16, 16)), 2);
  EXPECT_EQ(rotating(global.Ring(128, 16)), 9);
  EXPECT_EQ(global.Ring(128, 16).blocks, 10);
  EXPECT_TRUE(global.Ring(128, 16).sink);
  EXPECT_EQ(rotating(global.Ring(17, 16)), 3);
  const KvGroups windowed(4, std::vector<int32_t>{0, 40, 0, 100});
  EXPECT_EQ(rotating(windowed.Ring(128, 16)), 2);  // 2 x 16 <= 40
  EXPECT_EQ(rotating(windowed.Ring(128, 64)), 1);  // no whole ring fits a window of 40: sealed when whole
}

// The sink: a ring's last block holds positions [0, block_size) for good; the rotating blocks
// cycle through the rest as before, and a reader takes the sink only where the sequence holds it.
TEST(KvGroupsTest, TheSinkHoldsTheFirstBlockBesideTheRotatingBlocks) {
  const KvResidualRing ring{4, 3 + 1, true};  // 3 rotating blocks of 4 tokens, then the sink
  for (int32_t p = 0; p < 4; ++p) EXPECT_EQ(ring.Slot(2, p), (2 * 4 + 3) * 4 + p) << p;
  for (int32_t p = 4; p < 40; ++p) EXPECT_EQ(ring.Slot(2, p), (2 * 4 + (p / 4) % 3) * 4 + p % 4) << p;
  EXPECT_EQ(ring.SealedEnd(8), 0);  // the newest (3 - 1) * 4 tokens and the block being filled
  EXPECT_EQ(ring.SealedEnd(13), 4);
  EXPECT_TRUE(ring.Reads(2, /*sealed_end=*/8, /*holds_sink=*/true));
  EXPECT_FALSE(ring.Reads(2, 8, false));
  EXPECT_FALSE(ring.Reads(5, 8, true));
  EXPECT_TRUE(ring.Reads(9, 8, false));
}

}  // namespace
}  // namespace kvs
