// On the CPU backend (which cannot record graphs) the graph-enabled runner still pads its first
// decode step the way a graph would see it, finds it cannot record, and runs directly from then
// on: logits equal the direct runner's exactly. GPU replays are checked in gpu_model_test.
#include "gtest/gtest.h"
#include "tests/support/engine_harness.h"
#include "tests/support/graphed_decode.h"
#include "tests/support/model_paths.h"
#include "tests/support/offload_run.h"

namespace kvs {
namespace {

TEST(PaddedDecodeTest, CpuRunnerFallsBackToDirectStepsWithIdenticalLogits) {
  auto cpu = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(cpu, nullptr);
  const testing::GraphedDecodeReport r = testing::CompareGraphedDecode(*cpu, 12);
  EXPECT_EQ(r.max_rel_err, 0.0);
  EXPECT_EQ(r.argmax_differs, 0);
  EXPECT_EQ(r.replays, 0);
  EXPECT_GT(r.rows, 60);
}

// int4 / int2 (KIVI) caches pad the rings, sealed positions and sinks too: three sequences (the
// first decode step padded to four rows, one of which seals nothing and reads sequence 0's ring)
// generate exactly what direct steps generate, on every block-size / ring shape a padding row
// can seal nothing in.
TEST(PaddedDecodeTest, ChannelQuantizedPaddedFirstStepGeneratesWhatDirectStepsGenerate) {
  auto cpu = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(cpu, nullptr);
  const int32_t vocab = cpu->weights->config().vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {
      testing::RandomPrompt(13, 1, vocab), testing::RandomPrompt(4, 2, vocab), testing::RandomPrompt(30, 3, vocab)};
  struct Shape {
    int32_t block_size, residual_tokens;
  };
  for (const KvDType dtype : {KvDType::kKivi4, KvDType::kKivi2}) {
    for (const Shape shape : {Shape{4, 0}, Shape{4, 8}, Shape{1, 2}, Shape{16, 128}}) {
      EngineConfig padded;
      padded.kv_dtype = dtype;
      padded.scheduler.block_size = shape.block_size;
      padded.kv_residual_tokens = shape.residual_tokens;
      padded.kv_cache_bytes = 8 << 20;
      EngineConfig direct = padded;
      direct.enforce_eager = true;
      const auto got = testing::RunGreedy(*cpu, prompts, 12, padded);
      const auto want = testing::RunGreedy(*cpu, prompts, 12, direct);
      EXPECT_EQ(got, want) << KvDTypeName(dtype) << ", block size " << shape.block_size << ", " << shape.residual_tokens
                           << " residual tokens";
      EXPECT_EQ(got[0].size(), 12u);
    }
  }
}

}  // namespace
}  // namespace kvs
