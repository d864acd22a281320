// The step message a TP leader sends its workers survives the round trip, and a damaged one is
// an error, never a crash or a silently wrong step.
#include "parallel/step_wire.h"

#include "gtest/gtest.h"

namespace kvs {
namespace {

StepInput Sample() {
  StepInput in;
  in.Clear();
  in.token_ids = {5, 6, 7, 8};
  in.positions = {0, 1, 2, 9};
  in.slot_mapping = {16, 17, 18, 41};
  in.query_start = {0, 3, 4};
  in.context_len = {3, 10};
  in.max_blocks_per_seq = 2;
  in.block_table = {1, 0, 2, 2};
  in.logit_rows = {2, 3};
  in.swap_out = {4, 0, 5, 1};
  in.swap_in = {2, 6};
  in.copy_blocks = {1, 7};
  return in;
}

TEST(StepMessageTest, RoundTripsEveryField) {
  const StepInput in = Sample();
  std::vector<int32_t> words;
  EncodeStep(in, /*greedy_only=*/true, words);
  StepInput out;
  bool greedy = false;
  auto cmd = DecodeStep(words, out, greedy);
  ASSERT_TRUE(cmd.ok()) << cmd.status();
  EXPECT_EQ(*cmd, StepCommand::kRun);
  EXPECT_TRUE(greedy);
  EXPECT_EQ(out.token_ids, in.token_ids);
  EXPECT_EQ(out.positions, in.positions);
  EXPECT_EQ(out.slot_mapping, in.slot_mapping);
  EXPECT_EQ(out.query_start, in.query_start);
  EXPECT_EQ(out.context_len, in.context_len);
  EXPECT_EQ(out.block_table, in.block_table);
  EXPECT_EQ(out.logit_rows, in.logit_rows);
  EXPECT_EQ(out.max_blocks_per_seq, 2);
  EXPECT_EQ(out.swap_out, in.swap_out);
  EXPECT_EQ(out.swap_in, in.swap_in);
  EXPECT_EQ(out.copy_blocks, in.copy_blocks);

  EncodeStop(words);
  EXPECT_EQ(*DecodeStep(words, out, greedy), StepCommand::kStop);
}

TEST(StepMessageTest, RoundTripsTheTablesOfEveryKvGroup) {
  StepInput in = Sample();
  in.num_kv_groups = 2;  // a windowed group's table and slots after the global group's
  in.slot_mapping.insert(in.slot_mapping.end(), {80, 81, 82, 97});
  in.block_table.insert(in.block_table.end(), {5, 0, 0, 6});
  ASSERT_TRUE(in.GroupArraysConsistent());
  std::vector<int32_t> words;
  EncodeStep(in, false, words);
  StepInput out;
  bool greedy = true;
  ASSERT_TRUE(DecodeStep(words, out, greedy).ok());
  EXPECT_EQ(out.num_kv_groups, 2);
  EXPECT_EQ(out.slot_mapping, in.slot_mapping);
  EXPECT_EQ(out.block_table, in.block_table);
  EXPECT_EQ(std::vector<int32_t>(out.GroupTable(1).begin(), out.GroupTable(1).end()),
            (std::vector<int32_t>{5, 0, 0, 6}));
  EXPECT_EQ(std::vector<int32_t>(out.GroupSlots(1).begin(), out.GroupSlots(1).end()),
            (std::vector<int32_t>{80, 81, 82, 97}));
  auto no_groups = words;
  no_groups[9] = 0;
  EXPECT_EQ(DecodeStep(no_groups, out, greedy).status().code(), absl::StatusCode::kDataLoss);
}

// Channel-quantized KV: each sequence's residual ring, sealed positions and whether its ring holds
// its first block (the sink) travel with the step, for every sequence or none.
TEST(StepMessageTest, RoundTripsTheResidualsAndRefusesSomeOnly) {
  StepInput in = Sample();
  in.residual = {3, 0};
  in.sealed = {0, 8};
  in.sink = {1, 0};
  std::vector<int32_t> words;
  EncodeStep(in, false, words);
  StepInput out;
  bool greedy = true;
  ASSERT_TRUE(DecodeStep(words, out, greedy).ok());
  EXPECT_EQ(out.residual, in.residual);
  EXPECT_EQ(out.sealed, in.sealed);
  EXPECT_EQ(out.sink, in.sink);
  EXPECT_EQ(out.copy_blocks, in.copy_blocks);
  auto one_only = words;
  one_only[10] = 1;  // residuals for one of the two sequences
  one_only.resize(one_only.size() - 3);
  EXPECT_EQ(DecodeStep(one_only, out, greedy).status().code(), absl::StatusCode::kDataLoss);
}

TEST(StepMessageTest, DamagedMessagesAreErrors) {
  std::vector<int32_t> words;
  EncodeStep(Sample(), false, words);
  StepInput out;
  bool greedy;
  auto truncated = words;
  truncated.pop_back();
  EXPECT_EQ(DecodeStep(truncated, out, greedy).status().code(), absl::StatusCode::kDataLoss);
  auto negative = words;
  negative[3] = -1;
  EXPECT_EQ(DecodeStep(negative, out, greedy).status().code(), absl::StatusCode::kDataLoss);
  auto unknown = words;
  unknown[0] = 77;
  EXPECT_EQ(DecodeStep(unknown, out, greedy).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(DecodeStep(std::vector<int32_t>{1, 0}, out, greedy).ok());
}

}  // namespace
}  // namespace kvs
