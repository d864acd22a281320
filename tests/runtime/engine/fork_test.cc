// n > 1 samples of one prompt: the prompt is computed once and its blocks shared; the first
// write into a shared block copies it. Sample i must equal a lone request seeded with seed + i
// (same prefix, same logits, same generator), greedy samples must all equal the greedy answer,
// and every block must come back.
#include <random>
#include <set>
#include <tuple>

#include "gtest/gtest.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GoldenPath;
using testing::LoadCpuModel;

std::vector<RequestResult> RunAll(testing::LoadedCpuModel& lm, std::vector<Request> reqs, EngineConfig c,
                               int64_t* copies = nullptr, int64_t* preemptions = nullptr) {
  auto engine = Engine::Create(*lm.backend, *lm.weights, nullptr, c);
  EXPECT_TRUE(engine.ok()) << engine.status();
  for (auto& r : reqs) EXPECT_TRUE((*engine)->Add(std::move(r)).ok());
  while ((*engine)->HasWork()) {
    auto ev = (*engine)->Step();
    EXPECT_TRUE(ev.ok()) << ev.status();
    if (!ev.ok()) break;
    (*engine)->scheduler().CheckInvariants();
  }
  EXPECT_EQ((*engine)->scheduler().pool().num_free(), (*engine)->kv_cache().num_blocks()) << "blocks leaked";
  if (copies) *copies = (*engine)->scheduler().num_copied_blocks();
  if (preemptions) *preemptions = (*engine)->scheduler().num_preemptions();
  auto results = (*engine)->TakeResults();
  std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return std::tie(a.id, a.index) < std::tie(b.id, b.index); });
  return results;
}

Request Make(const std::string& id, int32_t n, float temperature, uint64_t seed) {
  Request r;
  r.id = id;
  r.prompt_ids = {1, 5, 9, 200, 17, 33, 8, 4, 2, 90, 11};  // 11 tokens: the last block is shared part-full
  r.params.max_tokens = 24;
  r.params.ignore_eos = true;
  r.params.n = n;
  r.params.temperature = temperature;
  r.params.seed = seed;
  return r;
}

TEST(ForkTest, SampleIEqualsALoneRequestSeededWithSeedPlusI) {
  auto lm = LoadCpuModel(GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  EngineConfig c;
  c.kv_cache_bytes = 8 << 20;
  c.scheduler.block_size = 4;
  int64_t copies = 0;
  const auto forked = RunAll(*lm, {Make("r", 4, 0.9f, 100)}, c, &copies);
  ASSERT_EQ(forked.size(), 4u);
  EXPECT_GT(copies, 0) << "the shared, part-full last prompt block must have been copied on write";
  std::set<std::vector<int32_t>> distinct;
  for (int32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(forked[i].index, i);
    const auto alone = RunAll(*lm, {Make("r", 1, 0.9f, 100 + i)}, c);
    ASSERT_EQ(alone.size(), 1u);
    EXPECT_EQ(forked[i].output_ids, alone[0].output_ids) << "sample " << i;
    distinct.insert(forked[i].output_ids);
  }
  EXPECT_GT(distinct.size(), 1u) << "temperature 0.9 samples should differ";

  const auto greedy = RunAll(*lm, {Make("g", 3, 0.0f, 0)}, c);
  const auto one = RunAll(*lm, {Make("g", 1, 0.0f, 0)}, c);
  ASSERT_EQ(greedy.size(), 3u);
  for (const auto& r : greedy) EXPECT_EQ(r.output_ids, one[0].output_ids);
}

TEST(ForkTest, ForksSurvivePreemptionByRecomputeAndBySwap) {
  auto lm = LoadCpuModel(GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  EngineConfig roomy;
  roomy.kv_cache_bytes = 8 << 20;
  roomy.scheduler.block_size = 4;
  const auto want = RunAll(*lm, {Make("a", 3, 0.7f, 1), Make("b", 2, 0.0f, 0), Make("c", 3, 0.5f, 9)}, roomy);
  for (PreemptionMode mode : {PreemptionMode::kRecompute, PreemptionMode::kSwap}) {
    EngineConfig tight = roomy;
    tight.kv_cache_bytes = 16 * 4 * lm->weights->config().KvBytesPerToken(4);  // 16 blocks for 8 sequences
    tight.preemption_mode = mode;
    tight.swap_space_bytes = 64 * 4 * lm->weights->config().KvBytesPerToken(4);
    int64_t preemptions = 0;
    const auto got = RunAll(*lm, {Make("a", 3, 0.7f, 1), Make("b", 2, 0.0f, 0), Make("c", 3, 0.5f, 9)}, tight, nullptr,
                            &preemptions);
    EXPECT_GT(preemptions, 0) << PreemptionModeName(mode);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].output_ids, want[i].output_ids) << PreemptionModeName(mode) << " " << got[i].id << "#" << got[i].index;
    }
  }
}

TEST(ForkTest, AbortRemovesEverySample) {
  auto lm = LoadCpuModel(GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  EngineConfig c;
  c.kv_cache_bytes = 8 << 20;
  auto engine = Engine::Create(*lm->backend, *lm->weights, nullptr, c);
  ASSERT_TRUE(engine.ok());
  ASSERT_TRUE((*engine)->Add(Make("x", 5, 0.8f, 3)).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*engine)->Step().ok());
  EXPECT_EQ((*engine)->scheduler().num_running(), 5);
  EXPECT_EQ((*engine)->Add(Make("x", 1, 0.0f, 0)).code(), absl::StatusCode::kAlreadyExists) << "samples still running";
  EXPECT_TRUE((*engine)->Abort("x"));
  EXPECT_TRUE((*engine)->Add(Make("x", 1, 0.0f, 0)).ok()) << "the id is free once every sample is gone";
  EXPECT_TRUE((*engine)->Abort("x"));
  EXPECT_FALSE((*engine)->HasWork());
  EXPECT_EQ((*engine)->scheduler().pool().num_free(), (*engine)->kv_cache().num_blocks());
}

// The issue-5 proof on a batch of 64 random requests: every greedy output is the same alone, in
// the batch, with chunked prefill, and under forced preemption by swap and by recompute.
TEST(BatchInvarianceTest, SixtyFourRequestsGiveTheSameTokensAloneBatchedChunkedAndPreempted) {
  auto lm = LoadCpuModel(GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> prompts(64);
  for (auto& p : prompts) {
    p.resize(1 + rng() % 40);
    for (auto& t : p) t = static_cast<int32_t>(rng() % 512);
  }
  EngineConfig base;
  base.kv_cache_bytes = 16 << 20;
  std::vector<std::vector<int32_t>> alone;
  for (const auto& p : prompts) alone.push_back(testing::RunGreedy(*lm, {p}, 16, base)[0]);
  EXPECT_EQ(testing::RunGreedy(*lm, prompts, 16, base), alone) << "batch of 64";
  EngineConfig chunked = base;
  chunked.scheduler.max_tokens_per_step = 7;
  chunked.scheduler.block_size = 3;
  EXPECT_EQ(testing::RunGreedy(*lm, prompts, 16, chunked), alone) << "chunked prefill";
  for (PreemptionMode mode : {PreemptionMode::kSwap, PreemptionMode::kRecompute}) {
    EngineConfig tight = base;
    tight.scheduler.block_size = 8;
    tight.kv_cache_bytes = 40 * 8 * lm->weights->config().KvBytesPerToken(4);  // 40 blocks for 64 sequences
    tight.preemption_mode = mode;
    tight.swap_space_bytes = 512 * 8 * lm->weights->config().KvBytesPerToken(4);
    int64_t preemptions = 0, swaps = 0;
    EXPECT_EQ(testing::RunGreedy(*lm, prompts, 16, tight, &preemptions, &swaps), alone) << PreemptionModeName(mode);
    EXPECT_GT(preemptions, 0) << PreemptionModeName(mode);
    EXPECT_EQ(swaps > 0, mode == PreemptionMode::kSwap);
  }
}

}  // namespace
}  // namespace kvs
