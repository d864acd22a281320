// The scheduler without a model: budgets, admission, chunked prefill, preemption, and a
// randomized run that checks the block accounting at every step and ends with an empty pool.
#include "runtime/sched/scheduler.h"

#include <random>
#include <set>

#include "gtest/gtest.h"

namespace kvs {
namespace {

Request Req(const std::string& id, int32_t prompt, int32_t max_tokens) {
  Request r;
  r.id = id;
  r.prompt_ids.assign(prompt, 5);
  r.params.max_tokens = max_tokens;
  return r;
}

// Plays the engine: samples token 7 for every sequence that samples; finishes at max_tokens.
int RunToCompletion(Scheduler& s, std::mt19937* abort_rng = nullptr) {
  StepInput in;
  int steps = 0;
  while (s.HasWork()) {
    auto plan = s.Schedule(in);
    EXPECT_FALSE(plan.empty()) << "work left but nothing schedulable";
    if (plan.empty()) break;
    EXPECT_LE(in.num_tokens(), s.config().max_tokens_per_step);
    EXPECT_LE(static_cast<int32_t>(plan.size()), s.config().max_seqs);
    // Every slot of this step belongs to a block the sequence owns, and no slot is used twice.
    std::set<int32_t> slots(in.slot_mapping.begin(), in.slot_mapping.end());
    EXPECT_EQ(slots.size(), in.slot_mapping.size());
    s.pool().CheckInvariants();
    for (const auto& ss : plan) {
      if (!ss.samples) continue;
      s.Append(ss.seq, 7);
      if (ss.seq->num_generated() >= ss.seq->request.params.max_tokens) s.Finish(ss.seq);
      else if (abort_rng && (*abort_rng)() % 50 == 0) EXPECT_TRUE(s.Abort(ss.seq->request.id));
    }
    ++steps;
  }
  return steps;
}

TEST(SchedulerTest, DecodesFirstThenChunksPrefillWithinTheBudget) {
  Scheduler s({4, 8, 10, 256}, 100);
  ASSERT_TRUE(s.Add(Req("a", 3, 5)).ok());
  StepInput in;
  auto p1 = s.Schedule(in);
  ASSERT_EQ(p1.size(), 1u);
  EXPECT_TRUE(p1[0].samples);
  s.Append(p1[0].seq, 7);
  ASSERT_TRUE(s.Add(Req("b", 25, 5)).ok());
  auto p2 = s.Schedule(in);
  ASSERT_EQ(p2.size(), 2u);
  EXPECT_EQ(p2[0].num_tokens, 1);   // a decodes first
  EXPECT_EQ(p2[1].num_tokens, 9);   // b gets the rest of the 10-token budget
  EXPECT_FALSE(p2[1].samples);      // mid-prompt: nothing to sample
  EXPECT_EQ(in.logit_rows, std::vector<int32_t>{0});
  EXPECT_EQ(in.positions[1], 0);
  EXPECT_EQ(in.context_len, (std::vector<int32_t>{4, 9}));
}

TEST(SchedulerTest, PreemptsTheNewestSequenceWhenBlocksRunOut) {
  // 4 blocks of 4 tokens: two 7-token prompts fit (2 blocks each) until they grow.
  Scheduler s({4, 8, 64, 64}, 4);
  ASSERT_TRUE(s.Add(Req("old", 7, 8)).ok());
  ASSERT_TRUE(s.Add(Req("new", 7, 8)).ok());
  RunToCompletion(s);
  EXPECT_GT(s.num_preemptions(), 0);
  EXPECT_EQ(s.pool().num_free(), 4);
}

TEST(SchedulerTest, RejectsRequestsThatCanNeverFit) {
  Scheduler s({16, 8, 64, 100}, 2);
  auto st = s.Add(Req("big", 40, 20));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("KV blocks"), std::string::npos);
  EXPECT_EQ(s.Add(Req("long", 100, 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add(Req("empty", 0, 1)).code(), absl::StatusCode::kInvalidArgument);
  Request bad = Req("t", 3, 1);
  bad.params.top_p = 0;
  EXPECT_NE(s.Add(bad).message().find("top_p"), std::string::npos);
}

TEST(SchedulerTest, RandomizedStressEndsWithEveryBlockBack) {
  std::mt19937 rng(99);
  for (int round = 0; round < 20; ++round) {
    const int32_t bs = 1 + rng() % 8;
    Scheduler s({bs, 1 + static_cast<int32_t>(rng() % 16), 8 + static_cast<int32_t>(rng() % 64), 128},
                (128 + bs - 1) / bs + static_cast<int32_t>(rng() % 64));
    for (int i = 0; i < 150; ++i) {
      const int32_t prompt = 1 + rng() % 100;
      const int32_t out = 1 + rng() % 27;
      ASSERT_TRUE(s.Add(Req(std::to_string(i), prompt, out)).ok());
    }
    RunToCompletion(s, &rng);
    s.pool().CheckInvariants();
    EXPECT_EQ(s.pool().num_free(), s.pool().num_blocks()) << "round " << round;
  }
}

}  // namespace
}  // namespace kvs
