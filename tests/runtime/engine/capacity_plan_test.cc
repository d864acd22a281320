// The planner and the runtime agree: the block count `kvshard plan` predicts for a device is
// the one an engine measures when it starts on that much memory, and the weight bytes it
// subtracts are what loading allocates, for whole models and tensor-parallel shards.
#include "runtime/engine/capacity_plan.h"

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "parallel/sharding_plan.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/weight_source.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

class CapacityPlanModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CapacityPlanModelTest, PredictsTheBlocksAnEngineFindsAtStartUp) {
  auto src = OpenWeightSource(testing::GoldenPath("models/" + GetParam()));
  ASSERT_TRUE(src.ok()) << src.status();
  // f32, and int4 with its residual blocks (counted with the workspace) where the heads allow it.
  for (KvDType kv : {KvDType::kF32, KvDType::kKivi4}) {
    if (KvDTypeHeadDimProblem(kv, (*src)->config().head_dim) != nullptr) continue;
    for (int64_t budget : {int64_t{8} << 20, int64_t{64} << 20}) {
      CpuBackend be(static_cast<size_t>(budget));
      auto w = ModelWeights::Load(**src, be);
      ASSERT_TRUE(w.ok());
      EngineConfig c;
      c.scheduler.block_size = 16;
      c.scheduler.max_seqs = 8;
      c.kv_dtype = kv;
      auto engine = Engine::Create(be, *w, nullptr, c);
      ASSERT_TRUE(engine.ok()) << engine.status();
      auto resolved = ResolveEngineConfig(c, (*src)->config());
      ASSERT_TRUE(resolved.ok());
      const CapacityPlan plan = PlanCapacity((*src)->config(), {ModelShard::Whole((*src)->config())}, DType::kF32, kv,
                                             budget, *resolved);
      const int32_t actual = (*engine)->kv_capacity().blocks;
      EXPECT_NEAR(plan.blocks, actual, 0.02 * actual) << "budget " << budget << " " << KvDTypeName(kv);
      EXPECT_EQ(plan.blocks, actual) << "same accounting, so the same number; " << KvDTypeName(kv);
    }
  }
}

// The longest sequence `plan` says fits is the longest the scheduler admits on that many blocks:
// one token more is refused. With sliding windows that is far longer than blocks x block size.
TEST_P(CapacityPlanModelTest, TheLongestSequenceThatFitsIsWhatTheSchedulerAdmits) {
  auto src = OpenWeightSource(testing::GoldenPath("models/" + GetParam()));
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& mc = (*src)->config();
  EngineConfig c;
  c.scheduler.block_size = 16;
  c.kv_cache_bytes = 256 * KvCache::BytesPerBlock(mc, KvDType::kF32, 16);
  auto resolved = ResolveEngineConfig(c, mc);
  ASSERT_TRUE(resolved.ok());
  const CapacityPlan plan = PlanCapacity(mc, {ModelShard::Whole(mc)}, DType::kF32, KvDType::kF32, 1 << 30, *resolved);
  ASSERT_EQ(plan.blocks, 256);
  const int64_t longest = plan.max_tokens();
  // The same memory with every layer keeping the whole context.
  ModelConfig all_global = mc;
  all_global.layer_windows.clear();
  const CapacityPlan global =
      PlanCapacity(all_global, {ModelShard::Whole(mc)}, DType::kF32, KvDType::kF32, 1 << 30, *resolved);
  EXPECT_EQ(global.max_tokens(), global.blocks * 16);
  if (mc.layer_windows.empty()) {
    EXPECT_EQ(longest, 256 * 16);
  } else {
    EXPECT_GT(longest, 2 * global.max_tokens());  // the windowed groups hold only their window
  }
  SchedulerConfig sc;
  sc.block_size = 16;
  sc.max_seqs = 4;
  sc.max_tokens_per_step = resolved->scheduler.max_tokens_per_step;
  sc.max_model_len = static_cast<int32_t>(longest) + 64;
  sc.kv_groups = KvGroups(mc.num_layers, mc.layer_windows);
  Scheduler s(sc, plan.blocks);
  Request fits{"fits", std::vector<int32_t>(longest - 1, 5), {}};
  fits.params.max_tokens = 1;
  EXPECT_TRUE(s.Add(fits).ok());
  Request over{"over", std::vector<int32_t>(longest, 5), {}};
  over.params.max_tokens = 1;
  EXPECT_EQ(s.Add(over).code(), absl::StatusCode::kResourceExhausted);
}

INSTANTIATE_TEST_SUITE_P(Models, CapacityPlanModelTest,
                         ::testing::Values("tiny-qwen2", "tiny-gemma3", "tiny-qwen2-swa"));

TEST(CapacityPlanTest, WeightBytesAreWhatLoadingAllocates) {
  for (const char* m : {"models/tiny-llama31", "models/tiny-qwen2", "models/tiny-mistral"}) {
    auto src = OpenWeightSource(testing::GoldenPath(m));
    ASSERT_TRUE(src.ok());
    const ModelConfig& c = (*src)->config();
    for (int32_t tp : {1, 2, 3}) {
      auto sharding = PlanSharding(c, tp);
      ASSERT_TRUE(sharding.ok());
      for (const ModelShard& s : sharding->ranks) {
        CpuBackend be(size_t{1} << 30);
        const size_t before = be.FreeMemoryBytes();
        auto w = ModelWeights::Load(**src, be, s);
        ASSERT_TRUE(w.ok());
        EXPECT_EQ(static_cast<int64_t>(before - be.FreeMemoryBytes()), ModelWeights::BytesFor(c, s, DType::kF32))
            << m << " tp " << tp;
      }
    }
  }
}

// Matrices kept in GGML blocks (the CPU backend keeps every block type, as the CUDA one does)
// count at their stored size: within the 64-byte alignment of each stored part. SmolLM2's 576
// columns are not whole Q4_K blocks: only its down projections stay in blocks, the rest float.
TEST(CapacityPlanTest, BlockTypedWeightBytesAreWhatLoadingAllocates) {
  for (const char* spec : {"random:smollm2-135m:Q8_0", "random:smollm2-135m:Q4_0", "random:smollm2-135m:Q4_K"}) {
    const bool mostly_blocks = std::string(spec).find("Q4_K") == std::string::npos;
    auto src = OpenWeightSource(spec);
    ASSERT_TRUE(src.ok()) << src.status();
    const ModelConfig& c = (*src)->config();
    for (int32_t tp : {1, 3}) {
      auto sharding = PlanSharding(c, tp);
      ASSERT_TRUE(sharding.ok());
      const ModelShard& s = sharding->ranks.back();
      CpuBackend be(size_t{1} << 30, CpuMath::kFast);  // the math that keeps blocks
      const size_t before = be.FreeMemoryBytes();
      auto w = ModelWeights::Load(**src, be, s);
      ASSERT_TRUE(w.ok()) << w.status();
      const double loaded = static_cast<double>(before - be.FreeMemoryBytes());
      const double planned = static_cast<double>(ModelWeights::BytesFor(c, s, DType::kF32, src->get()));
      EXPECT_NEAR(planned, loaded, 0.002 * loaded) << spec << " tp " << tp;
      EXPECT_EQ(planned < 0.5 * ModelWeights::BytesFor(c, s, DType::kF32), mostly_blocks) << spec;
    }
  }
}

TEST(CapacityPlanTest, QuantizedFormatsShrinkBytesPerElementUpToTheirScales) {
  EXPECT_EQ(KvBytesPerElement(KvDType::kBF16, 128), 2.0);
  EXPECT_NEAR(KvBytesPerElement(KvDType::kFP8, 128), 1.03125, 1e-12);
  EXPECT_NEAR(KvBytesPerElement(KvDType::kINT4, 128), 0.625, 1e-12);
  EXPECT_FALSE(ParseKvDType("fp6").ok());
}

}  // namespace
}  // namespace kvs
