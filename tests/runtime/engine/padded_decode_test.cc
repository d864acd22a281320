// On the CPU backend (which cannot record graphs) the graph-enabled runner still pads its first
// decode step the way a graph would see it, finds it cannot record, and runs directly from then
// on: logits equal the direct runner's exactly. GPU replays are checked in gpu_model_test.
#include "gtest/gtest.h"
#include "tests/support/graphed_decode.h"
#include "tests/support/model_paths.h"

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

}  // namespace
}  // namespace kvs
