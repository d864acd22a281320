// The rules that pick NCCL or the peer-memory all-reduce, and the reasons they give.
#include "parallel/all_reduce_choice.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace kvs {
namespace {

TEST(AllReduceChoiceTest, ParsesTheThreeModesAndNamesTheFlagOtherwise) {
  EXPECT_EQ(*ParseAllReduceMode("auto"), AllReduceMode::kAuto);
  EXPECT_EQ(*ParseAllReduceMode("nccl"), AllReduceMode::kNccl);
  EXPECT_EQ(*ParseAllReduceMode("custom"), AllReduceMode::kCustom);
  const auto bad = ParseAllReduceMode("fast");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--all-reduce"), std::string::npos);
  EXPECT_NE(bad.status().message().find("'fast'"), std::string::npos);
}

TEST(AllReduceChoiceTest, ProblemsAreNamed) {
  EXPECT_EQ(PeerAllReduceProblem(2, true, true), "");
  EXPECT_EQ(PeerAllReduceProblem(8, true, true), "");
  EXPECT_NE(PeerAllReduceProblem(16, true, true).find("16 ranks"), std::string::npos);
  EXPECT_NE(PeerAllReduceProblem(4, false, true).find("spans nodes"), std::string::npos);
  EXPECT_NE(PeerAllReduceProblem(4, true, false).find("peer access"), std::string::npos);
}

TEST(AllReduceChoiceTest, AutoTakesThePeerPathUpToTheFirstSizeWhereNcclWins) {
  const std::vector<AllReduceTiming> t = {
      {8 << 10, 23.0, 5.0}, {64 << 10, 25.0, 9.0}, {1 << 20, 30.0, 31.0}, {8 << 20, 60.0, 50.0}};
  const auto c = ChooseAllReduce(AllReduceMode::kAuto, "", true, t);
  ASSERT_TRUE(c.ok());
  // A single crossing: the later win at 8 MiB does not reopen the peer path.
  EXPECT_EQ(c->custom_below, size_t{1} << 20);
  EXPECT_NE(c->reason.find("below 1048576 bytes"), std::string::npos) << c->reason;
  EXPECT_NE(c->reason.find("8192 B: 5.0 vs 23.0 us"), std::string::npos) << c->reason;
}

TEST(AllReduceChoiceTest, AutoKeepsNcclWhenThePeerPathLosesOrFailedToRun) {
  const std::vector<AllReduceTiming> slower = {{8 << 10, 10.0, 12.0}};
  EXPECT_EQ(ChooseAllReduce(AllReduceMode::kAuto, "", true, slower)->custom_below, 0u);
  const std::vector<AllReduceTiming> failed = {{8 << 10, 10.0, -1.0}};  // the peer path did not run
  EXPECT_EQ(ChooseAllReduce(AllReduceMode::kAuto, "", true, failed)->custom_below, 0u);
  const std::vector<AllReduceTiming> faster = {{8 << 10, 23.0, 5.0}, {64 << 20, 900.0, 800.0}};
  EXPECT_EQ(ChooseAllReduce(AllReduceMode::kAuto, "", true, faster)->custom_below, SIZE_MAX);
  EXPECT_EQ(ChooseAllReduce(AllReduceMode::kAuto, "", true, {})->custom_below, 0u);
  const std::vector<AllReduceTiming> unordered = {{64 << 10, 1, 2}, {8 << 10, 1, 2}};
  EXPECT_FALSE(ChooseAllReduce(AllReduceMode::kAuto, "", true, unordered).ok());
}

TEST(AllReduceChoiceTest, AProblemFallsBackToNcclWithItsReasonOrFailsWhenNothingIsLeft) {
  const std::string problem = PeerAllReduceProblem(4, false, true);
  const auto c = ChooseAllReduce(AllReduceMode::kAuto, problem, true, {});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->custom_below, 0u);
  EXPECT_NE(c->reason.find("spans nodes"), std::string::npos);
  EXPECT_FALSE(ChooseAllReduce(AllReduceMode::kAuto, problem, false, {}).ok());
  const auto forced = ChooseAllReduce(AllReduceMode::kCustom, problem, true, {});
  ASSERT_FALSE(forced.ok());
  EXPECT_NE(forced.status().message().find("--all-reduce custom: the group spans nodes"), std::string::npos);
}

TEST(AllReduceChoiceTest, WithoutNcclThePeerPathTakesEverythingAndForcingNcclFails) {
  const auto c = ChooseAllReduce(AllReduceMode::kAuto, "", false, {});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->custom_below, SIZE_MAX);
  EXPECT_NE(c->reason.find("NCCL is not available"), std::string::npos);
  const auto forced = ChooseAllReduce(AllReduceMode::kNccl, "", false, {});
  ASSERT_FALSE(forced.ok());
  EXPECT_NE(forced.status().message().find("--all-reduce nccl"), std::string::npos);
  EXPECT_EQ(ChooseAllReduce(AllReduceMode::kNccl, "", true, {})->custom_below, 0u);
  EXPECT_EQ(ChooseAllReduce(AllReduceMode::kCustom, "", true, {})->custom_below, SIZE_MAX);
}

}  // namespace
}  // namespace kvs
