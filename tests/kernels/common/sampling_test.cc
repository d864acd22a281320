#include "kernels/common/sampling.h"

#include <map>
#include <random>

#include "gtest/gtest.h"

namespace kvs::cpu {
namespace {

TEST(SamplingTest, GreedyPicksTheFirstMaximum) {
  std::vector<std::pair<float, int32_t>> scratch;
  const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(SampleToken(logits, {}, 0.99, scratch), 1);
}

TEST(SamplingTest, TopKAndTopPRestrictTheCandidates) {
  std::vector<std::pair<float, int32_t>> scratch;
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, -1.0f, 5.0f};
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  std::map<int32_t, int> seen;
  for (int i = 0; i < 2000; ++i) seen[SampleToken(logits, {1.0f, 2, 1.0f}, u(rng), scratch)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(4) && seen.count(0));
  // p(4) = e^5 / (e^5 + e^2 + e + 1 + e^-1) ~= 0.94: top_p 0.9 keeps token 4 alone.
  seen.clear();
  for (int i = 0; i < 500; ++i) seen[SampleToken(logits, {1.0f, 0, 0.9f}, u(rng), scratch)]++;
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen.begin()->first, 4);
}

TEST(SamplingTest, TemperatureMatchesTheSoftmaxFrequencies) {
  std::vector<std::pair<float, int32_t>> scratch;
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 1/4, 3/4 at T=1
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(0, 1);
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += SampleToken(logits, {1.0f, 0, 1.0f}, u(rng), scratch);
  EXPECT_NEAR(ones / static_cast<double>(n), 0.75, 0.015);
  // T=2 flattens: p(1) = sqrt(3) / (1 + sqrt(3)) ~= 0.634.
  ones = 0;
  for (int i = 0; i < n; ++i) ones += SampleToken(logits, {2.0f, 0, 1.0f}, u(rng), scratch);
  EXPECT_NEAR(ones / static_cast<double>(n), 0.634, 0.015);
}

TEST(SamplingTest, SameUniformDrawGivesTheSameToken) {
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<float> logits(1000);
  std::mt19937 g(3);
  for (auto& x : logits) x = std::normal_distribution<float>()(g);
  for (float u : {0.0f, 0.3f, 0.999999f}) {
    EXPECT_EQ(SampleToken(logits, {0.8f, 50, 0.95f}, u, scratch), SampleToken(logits, {0.8f, 50, 0.95f}, u, scratch));
  }
}

TEST(SamplingTest, TheDrawWalksTheKeptTokensInIdOrder) {
  std::vector<std::pair<float, int32_t>> scratch;
  // Weights relative to the maximum: 1/3 for id 0, 1 for id 1; total 4/3.
  const std::vector<float> logits = {0.0f, std::log(3.0f)};
  EXPECT_EQ(SampleToken(logits, {1.0f, 0, 1.0f}, 0.2f, scratch), 0);  // 0.267 < 1/3
  EXPECT_EQ(SampleToken(logits, {1.0f, 0, 1.0f}, 0.3f, scratch), 1);  // 0.4 > 1/3
  EXPECT_EQ(SampleToken(logits, {1.0f, 0, 1.0f}, 0.0f, scratch), 0);
}

TEST(SamplingTest, TiesAtTheCutOffAreKeptInIdOrder) {
  std::vector<std::pair<float, int32_t>> scratch;
  // Ranked: 0 (3.0), then 1, 2, 3 tied at 1.0. top_k 2 keeps ids 0 and 1, never 2 or 3.
  const std::vector<float> logits = {3.0f, 1.0f, 1.0f, 1.0f};
  std::map<int32_t, int> seen;
  for (int i = 0; i < 1000; ++i) seen[SampleToken(logits, {5.0f, 2, 1.0f}, (i + 0.5f) / 1000, scratch)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen.count(0) && seen.count(1));
  // Four equal logits, top_p 0.5: the first two ids reach half the weight; the draw splits evenly.
  const std::vector<float> flat = {2.0f, 2.0f, 2.0f, 2.0f};
  EXPECT_EQ(SampleToken(flat, {1.0f, 0, 0.5f}, 0.49f, scratch), 0);
  EXPECT_EQ(SampleToken(flat, {1.0f, 0, 0.5f}, 0.51f, scratch), 1);
  EXPECT_EQ(SampleToken(flat, {1.0f, 0, 0.5f}, 0.99f, scratch), 1);
}

TEST(SamplingTest, TopPCountsWeightAgainstTheTopKSurvivors) {
  std::vector<std::pair<float, int32_t>> scratch;
  // After top_k 2 the kept weights are 1 (id 2) and e^-1 (id 0): 0.73 / 0.27. top_p 0.7 keeps
  // id 2 alone; over the whole row id 2 holds 0.61 of the weight and id 0 is needed too.
  const std::vector<float> logits = {0.0f, -1.0f, 1.0f, -1.0f};
  for (float u : {0.0f, 0.5f, 0.99f}) EXPECT_EQ(SampleToken(logits, {1.0f, 2, 0.7f}, u, scratch), 2);
  EXPECT_EQ(SampleToken(logits, {1.0f, 0, 0.7f}, 0.1f, scratch), 0);
}

}  // namespace
}  // namespace kvs::cpu
