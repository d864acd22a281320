// Log-probabilities of sampled tokens: greedy tokens are unchanged when they are asked for (the
// host's argmax over the gathered logits equals the device argmax), each is the log-softmax of
// the model's logits (checked against an independent prefill), the top alternatives come most
// likely first, and the streamed events carry every token's entry exactly once.
#include <cmath>

#include "gtest/gtest.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

struct Generation {
  std::vector<int32_t> ids;
  std::vector<TokenLogprob> result_logprobs, event_logprobs;
};

Generation Generate(testing::LoadedCpuModel& lm, const std::vector<int32_t>& prompt, SamplingParams p) {
  EngineConfig c;
  c.kv_cache_bytes = 8 << 20;
  auto engine = Engine::Create(*lm.backend, *lm.weights, nullptr, c);
  EXPECT_TRUE(engine.ok()) << engine.status();
  EXPECT_TRUE((*engine)->Add(Request{"r", prompt, p}).ok());
  Generation run;
  while ((*engine)->HasWork()) {
    auto events = (*engine)->Step();
    EXPECT_TRUE(events.ok()) << events.status();
    for (auto& ev : *events) run.event_logprobs.insert(run.event_logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
  }
  auto results = (*engine)->TakeResults();
  EXPECT_EQ(results.size(), 1u);
  run.ids = results[0].output_ids;
  run.result_logprobs = results[0].logprobs;
  return run;
}

TEST(LogprobsTest, GreedyTokensCarryTheirLogSoftmaxAndTheTopAlternatives) {
  auto lm = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  const std::vector<int32_t> prompt = {1, 42, 7, 300, 12, 99};
  SamplingParams p;
  p.max_tokens = 10;
  p.ignore_eos = true;
  const Generation plain = Generate(*lm, prompt, p);
  p.logprobs = 3;
  const Generation with = Generate(*lm, prompt, p);
  EXPECT_EQ(with.ids, plain.ids) << "asking for logprobs must not change greedy tokens";
  ASSERT_EQ(with.result_logprobs.size(), with.ids.size());
  ASSERT_EQ(with.event_logprobs.size(), with.ids.size()) << "each token's entry streams exactly once";
  EXPECT_TRUE(plain.result_logprobs.empty());
  for (size_t i = 0; i < with.ids.size(); ++i) {
    const TokenLogprob& lp = with.result_logprobs[i];
    EXPECT_EQ(lp.token, with.ids[i]);
    EXPECT_LE(lp.logprob, 0.0f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, lp.token) << "greedy picks the most likely token";
    EXPECT_EQ(lp.top[0].second, lp.logprob);
    EXPECT_GE(lp.top[0].second, lp.top[1].second);
    EXPECT_GE(lp.top[1].second, lp.top[2].second);
    EXPECT_EQ(with.event_logprobs[i].token, lp.token);
  }
  // The first token's log-probability from an independent prefill of the prompt.
  const std::vector<float> logits = testing::PrefillLogits(*lm, prompt, false);
  double z = 0;
  const float mx = *std::max_element(logits.begin(), logits.end());
  for (float x : logits) z += std::exp(static_cast<double>(x) - mx);
  const double want = logits[with.ids[0]] - mx - std::log(z);
  EXPECT_NEAR(with.result_logprobs[0].logprob, want, 1e-4);
}

TEST(LogprobsTest, SampledTokensGetTheirOwnLogprobWithoutAlternativesAtZero) {
  auto lm = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  SamplingParams p;
  p.max_tokens = 8;
  p.ignore_eos = true;
  p.temperature = 1.0f;
  p.seed = 5;
  const Generation plain = Generate(*lm, {3, 4, 5}, p);
  p.logprobs = 0;
  const Generation with = Generate(*lm, {3, 4, 5}, p);
  EXPECT_EQ(with.ids, plain.ids) << "same seed, same samples";
  ASSERT_EQ(with.result_logprobs.size(), with.ids.size());
  for (const TokenLogprob& lp : with.result_logprobs) {
    EXPECT_TRUE(lp.top.empty());
    EXPECT_LE(lp.logprob, 0.0f);
    EXPECT_TRUE(std::isfinite(lp.logprob));
  }
}

TEST(LogprobsTest, ComputeLogprobBreaksTiesTowardTheLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f};
  const TokenLogprob lp = ComputeLogprob(logits, 2, 3);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_EQ(lp.top[1].first, 2);
  EXPECT_EQ(lp.top[2].first, 0);
  EXPECT_NEAR(lp.logprob, 3.0 - std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(-2.0)), 1e-6);
  SamplingParams p;
  p.logprobs = 21;
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace kvs
