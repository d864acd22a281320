// KvCache::QueueMoves on the CPU backend: a step's swap-outs, copies and swap-ins leave the cache
// as if they had run one by one in that order, and the plan handed to the backend goes layer by
// layer, each layer's last batch marking that layer's move slot.
#include "runtime/kv/kv_cache.h"

#include <cstring>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace kvs {
namespace {

constexpr int32_t kLayers = 3, kBlocks = 8, kHostBlocks = 4, kBlockSize = 4;

ModelConfig TinyConfig() {
  ModelConfig c;
  c.num_layers = kLayers;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  return c;
}

class KvCacheMovesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cache = KvCache::Create(backend_, TinyConfig(), KvDType::kF32, kBlockSize, kBlocks);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::make_unique<KvCache>(*std::move(cache));
    ASSERT_TRUE(cache_->AddHostTier(backend_, kHostBlocks).ok());
    block_bytes_ = cache_->bytes_per_block() / (2 * kLayers);
    // Every byte of block b, layer l, K or V names them: the contents are told apart after moves.
    for (int32_t l = 0; l < kLayers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int32_t b = 0; b < kBlocks; ++b) std::memset(Block(l, kv, b), Tag(l, kv, b), block_bytes_);
      }
    }
  }
  static int Tag(int32_t layer, int kv, int32_t block) { return 1 + block + 16 * kv + 32 * layer; }
  std::byte* Block(int32_t layer, int kv, int32_t block) const {
    const PagedKvView view = cache_->Layer(layer);
    return static_cast<std::byte*>(kv == 0 ? view.k : view.v) + static_cast<size_t>(block) * block_bytes_;
  }
  // Whether every layer's K and V of `block` hold what `source` held at the start.
  bool Holds(int32_t block, int32_t source) const {
    for (int32_t l = 0; l < kLayers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        const std::byte* p = Block(l, kv, block);
        for (size_t i = 0; i < block_bytes_; ++i) {
          if (p[i] != static_cast<std::byte>(Tag(l, kv, source))) return false;
        }
      }
    }
    return true;
  }

  CpuBackend backend_{size_t{64} << 20};
  std::unique_ptr<KvCache> cache_;
  size_t block_bytes_ = 0;
};

TEST_F(KvCacheMovesTest, MovesActAsIfRunOneByOneInOrder) {
  // Swap block 3 out to host 0; copy 0 -> 1, then 1 -> 2 (a chain: 2 must end with 0's contents,
  // not 1's), then 4 -> 3 (3 was just swapped out); swap host 0 back in to block 5.
  const std::vector<int32_t> out = {3, 0}, copies = {0, 1, 1, 2, 4, 3}, in = {0, 5};
  ASSERT_TRUE(cache_->QueueMoves(backend_, out, copies, in).ok());
  ASSERT_TRUE(backend_.Synchronize().ok());
  EXPECT_TRUE(Holds(1, 0));
  EXPECT_TRUE(Holds(2, 0));
  EXPECT_TRUE(Holds(3, 4));
  EXPECT_TRUE(Holds(5, 3));
  EXPECT_TRUE(Holds(6, 6));  // untouched
}

TEST_F(KvCacheMovesTest, PlanGoesLayerByLayerAndMarksEachLayersSlot) {
  const std::vector<int32_t> out = {3, 0}, copies = {0, 1, 1, 2}, in = {0, 5};
  auto plan = cache_->PlanMoves(out, copies, in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // Per layer: {swap-out 3 -> host 0, copy 0 -> 1} | {copy 1 -> 2, swap-in host 0 -> 5}: the copy
  // 1 -> 2 reads what the first batch writes, so it starts a second one, which the swap-in joins
  // (it reads host 0 after the first batch wrote it). Two K and V pieces per move; the second
  // batch marks the layer.
  ASSERT_EQ(plan->batches.size(), 2u * kLayers);
  size_t region = 0;
  for (int32_t l = 0; l < kLayers; ++l) {
    for (int i = 0; i < 2; ++i) {
      const Backend::MoveBatch& b = plan->batches[2 * l + i];
      EXPECT_EQ(b.count, 4);
      EXPECT_EQ(b.mark, i == 1 ? l : -1) << "layer " << l << " batch " << i;
      // Every piece of this layer's batches lies in this layer's K or V buffer at one end.
      for (int64_t r = 0; r < b.count; ++r, ++region) {
        const CopyRegion& piece = plan->regions[region];
        const auto* k = static_cast<const std::byte*>(cache_->Layer(l).k);
        const auto* v = static_cast<const std::byte*>(cache_->Layer(l).v);
        const auto in_layer = [&](const void* p) {
          const auto* q = static_cast<const std::byte*>(p);
          return (q >= k && q < k + kBlocks * block_bytes_) || (q >= v && q < v + kBlocks * block_bytes_);
        };
        EXPECT_TRUE(in_layer(piece.src) || in_layer(piece.dst)) << "layer " << l << " region " << r;
        EXPECT_EQ(piece.bytes, block_bytes_);
      }
    }
  }
  EXPECT_EQ(region, plan->regions.size());
}

TEST_F(KvCacheMovesTest, WholeLayoutMovesEveryLayerInTheFewestBatchesAndMarksTheLastSlot) {
  const std::vector<int32_t> out = {3, 0}, copies = {0, 1, 1, 2, 4, 3}, in = {0, 5};
  auto plan = cache_->PlanMoves(out, copies, in, /*by_layer=*/false);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // {swap-out 3 -> host 0, copy 0 -> 1} | {copy 1 -> 2, copy 4 -> 3, swap-in host 0 -> 5}: the
  // split the order needs (1 -> 2 reads what the first batch writes), each batch holding every
  // layer's pieces; only the last marks, slot kLayers - 1.
  ASSERT_EQ(plan->batches.size(), 2u);
  EXPECT_EQ(plan->batches[0].count, 2 * 2 * kLayers);
  EXPECT_EQ(plan->batches.back().mark, kLayers - 1);
  EXPECT_EQ(plan->batches[0].mark, -1);
  EXPECT_EQ(plan->regions.size(), 5u * 2 * kLayers);
  ASSERT_TRUE(cache_->QueueMoves(backend_, out, copies, in, /*by_layer=*/false).ok());
  EXPECT_TRUE(Holds(1, 0));
  EXPECT_TRUE(Holds(2, 0));
  EXPECT_TRUE(Holds(3, 4));
  EXPECT_TRUE(Holds(5, 3));
}

TEST_F(KvCacheMovesTest, RejectsBadListsBeforeMovingAnything) {
  const std::vector<int32_t> good = {0, 1}, odd = {0}, past_host = {kHostBlocks, 2}, past_cache = {kBlocks, 0};
  EXPECT_EQ(cache_->QueueMoves(backend_, odd, {}, {}).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status s = cache_->QueueMoves(backend_, {}, good, past_host);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(s.message().find("swap-in"), std::string::npos) << s;
  EXPECT_EQ(cache_->QueueMoves(backend_, past_cache, {}, {}).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(Holds(1, 1));  // the good copy in the rejected call did not run
  EXPECT_TRUE(cache_->PlanMoves({}, {}, {})->batches.empty());
}

TEST(BackendMovesTest, MoveRegionsChecksItsBatchesAgainstTheRegions) {
  CpuBackend backend(size_t{1} << 20);
  int a = 1, b = 2;
  const CopyRegion region{&a, &b, sizeof(int)};
  const std::vector<Backend::MoveBatch> too_many = {{2, 0}}, negative = {{-1, -1}, {2, 0}};
  EXPECT_EQ(backend.MoveRegions({&region, 1}, too_many).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend.MoveRegions({&region, 1}, negative).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b, 2);
  const std::vector<Backend::MoveBatch> one = {{1, 0}};
  ASSERT_TRUE(backend.MoveRegions({&region, 1}, one).ok());
  EXPECT_EQ(b, 1);
}

// Offload staging: a layer's offload blocks copied to their window slots, which every layer's
// view addresses; each layer stages its own bytes; only offload blocks are accepted.
TEST(KvCacheStagingTest, StagedBlocksAppearAtTheirWindowIdsInThatLayer) {
  CpuBackend backend{size_t{64} << 20};
  constexpr int32_t kOffload = 5;
  auto cache = KvCache::Create(backend, TinyConfig(), KvDType::kF32, kBlockSize, kBlocks, kOffload);
  ASSERT_TRUE(cache.ok()) << cache.status();
  ASSERT_TRUE(cache->has_staging_window());
  const size_t bb = cache->bytes_per_block() / (2 * kLayers);
  const int32_t first = cache->WindowBlock(kBlocks);
  EXPECT_GE(first, kBlocks + kOffload);
  EXPECT_EQ(first * bb % backend.HostTailAlignment(), 0u) << "window slots start on a mapping boundary";
  EXPECT_EQ(cache->WindowBlock(kBlocks + kOffload - 1), first + kOffload - 1);
  EXPECT_EQ(cache->Layer(0).num_blocks, first + kOffload) << "views reach the window";
  auto block = [&](int32_t layer, int kv, int32_t b) {
    const PagedKvView v = cache->Layer(layer);
    return static_cast<std::byte*>(kv == 0 ? v.k : v.v) + static_cast<size_t>(b) * bb;
  };
  for (int32_t l = 0; l < kLayers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = kBlocks; b < kBlocks + kOffload; ++b) std::memset(block(l, kv, b), 1 + b + 16 * kv + 64 * l, bb);
    }
  }
  const std::vector<int32_t> staged = {kBlocks + 4, kBlocks + 1};
  for (int32_t l = 0; l < kLayers; ++l) {
    ASSERT_TRUE(cache->StageOffloaded(backend, l, staged).ok());
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b : staged) {
        const std::byte* w = block(l, kv, cache->WindowBlock(b));
        for (size_t i = 0; i < bb; ++i) ASSERT_EQ(w[i], static_cast<std::byte>(1 + b + 16 * kv + 64 * l)) << l << " " << b;
      }
    }
  }
  EXPECT_EQ(cache->StageOffloaded(backend, 0, std::vector<int32_t>{kBlocks - 1}).code(), absl::StatusCode::kInvalidArgument)
      << "a device block has no window slot";
  EXPECT_EQ(cache->StageOffloaded(backend, 0, std::vector<int32_t>{kBlocks + kOffload}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->StageOffloaded(backend, kLayers, staged).code(), absl::StatusCode::kInvalidArgument);

  auto plain = KvCache::Create(backend, TinyConfig(), KvDType::kF32, kBlockSize, kBlocks);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_staging_window());
  EXPECT_EQ(plain->StageOffloaded(backend, 0, staged).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvs
