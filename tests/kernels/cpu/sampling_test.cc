#include "kernels/cpu/sampling.h"

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
  std::uniform_real_distribution<double> u(0, 1);
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
  std::uniform_real_distribution<double> u(0, 1);
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
  for (double u : {0.0, 0.3, 0.999999}) {
    EXPECT_EQ(SampleToken(logits, {0.8f, 50, 0.95f}, u, scratch), SampleToken(logits, {0.8f, 50, 0.95f}, u, scratch));
  }
}

}  // namespace
}  // namespace kvs::cpu
