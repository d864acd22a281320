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

TEST(CapacityPlanTest, PredictsTheBlocksAnEngineFindsAtStartUp) {
  auto src = OpenWeightSource(testing::GoldenPath("models/tiny-qwen2"));  // bias, MQA, tied
  ASSERT_TRUE(src.ok()) << src.status();
  for (int64_t budget : {int64_t{8} << 20, int64_t{64} << 20}) {
    CpuBackend be(static_cast<size_t>(budget));
    auto w = ModelWeights::Load(**src, be);
    ASSERT_TRUE(w.ok());
    EngineConfig c;
    c.block_size = 16;
    c.max_seqs = 8;
    auto engine = Engine::Create(be, *w, nullptr, c);
    ASSERT_TRUE(engine.ok()) << engine.status();
    auto resolved = ResolveEngineConfig(c, (*src)->config());
    ASSERT_TRUE(resolved.ok());
    const CapacityPlan plan = PlanCapacity((*src)->config(), {ModelShard::Whole((*src)->config())}, DType::kF32,
                                           KvDType::kF32, budget, *resolved);
    const int32_t actual = (*engine)->kv_capacity().blocks;
    EXPECT_NEAR(plan.blocks, actual, 0.02 * actual) << "budget " << budget;
    EXPECT_EQ(plan.blocks, actual) << "same accounting, so the same number";
  }
}

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
