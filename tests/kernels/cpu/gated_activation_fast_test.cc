// The fast backend's gated activations (kernels/cpu/gated_activation_fast.cc) against the
// reference's libm forms: its tanh within 2e-7 of std::tanh at every 1/4096 step over [-12, 12]
// and at the extremes, its silu within 4 roundings (relative) of x / (1 + std::exp(-x)) at every
// 1/256 step over [-87, 100], below 2e-36 in size further left, and at the extremes, and whole GeGLU and SwiGLU rows
// element by element, with the seed printed on failure.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs {
namespace {

TEST(GeluFastTest, TanhIsWithinTwoUlpsOfOneOfStdTanh) {
  float worst = 0.0f, at = 0.0f;
  for (float y = -12.0f; y <= 12.0f; y += 1.0f / 4096) {
    const float err = std::fabs(cpu::TanhForGelu(y) - std::tanh(y));
    if (err > worst) worst = err, at = y;
  }
  for (float y : {0.0f, 1e-30f, -1e-30f, 1e-7f, 1e30f, -1e30f, std::numeric_limits<float>::max(),
                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()}) {
    EXPECT_NEAR(cpu::TanhForGelu(y), std::tanh(y), 2e-7f) << y;
  }
  EXPECT_LE(worst, 2e-7f) << "at " << at;
  std::printf("fast tanh: worst |error| %.2e at %g\n", worst, at);
}

using GatedFn = void (*)(const float*, int64_t, int64_t, int64_t, float*, int64_t);

// Random gate/up rows (normal, sd 3) through the reference's and the fast backend's forms.
struct GatedRows {
  static constexpr int64_t kRows = 7, kInter = 1003;  // odd width: the vector loop's tail
  std::vector<float> gu, want, got;
  GatedRows(uint32_t seed, GatedFn reference, GatedFn fast)
      : gu(kRows * 2 * kInter), want(kRows * kInter), got(kRows * kInter) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (auto& x : gu) x = normal(rng);
    reference(gu.data(), 2 * kInter, kRows, kInter, want.data(), kInter);
    fast(gu.data(), 2 * kInter, kRows, kInter, got.data(), kInter);
  }
  float gate(size_t i) const { return gu[i / kInter * 2 * kInter + i % kInter]; }
  float up(size_t i) const { return gu[i / kInter * 2 * kInter + kInter + i % kInter]; }
};

TEST(GeluFastTest, GeGluRowsEqualTheReferenceElementwise) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const GatedRows g(seed, cpu::GeluGluF32, cpu::GeluGluFastF32);
  for (size_t i = 0; i < g.want.size(); ++i) {
    // 0.5 x up (1 + tanh): the tanh's 2e-7, scaled, plus float rounding of the products.
    ASSERT_NEAR(g.got[i], g.want[i], 1e-7f * std::fabs(g.gate(i) * g.up(i)) + 1e-6f * std::fabs(g.want[i]))
        << "element " << i;
  }
}

TEST(SiluFastTest, SiluIsWithinFourRoundingsOfTheReference) {
  const auto reference = [](float x) { return x / (1.0f + std::exp(-x)); };
  float worst = 0.0f, at = 0.0f;  // relative error in units of float's epsilon
  for (float x = -87.0f; x <= 100.0f; x += 1.0f / 256) {
    const float want = reference(x);
    const float err = std::fabs(cpu::SiluFast(x) - want) / std::fabs(want) / std::numeric_limits<float>::epsilon();
    if (err > worst) worst = err, at = x;
  }
  EXPECT_LE(worst, 4.0f) << "at " << at;
  std::printf("fast silu: worst relative error %.2f epsilons at %g\n", worst, at);
  // The extremes: x itself far right; far left -0 (the reference's is -0 past -88.7, below 2e-36
  // in size from -87 to there).
  for (float x :
       {0.0f, 1e-30f, -1e-30f, 1e30f, std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(cpu::SiluFast(x), reference(x)) << x;
  }
  for (float x = -100.0f; x < -87.0f; x += 1.0f / 256) {
    ASSERT_LE(std::fabs(cpu::SiluFast(x) - reference(x)), 2e-36f) << x;
  }
  for (float x : {-90.0f, -1e30f, -std::numeric_limits<float>::max()}) {
    EXPECT_EQ(cpu::SiluFast(x), reference(x)) << x;
  }
  // -inf: silu's limit, -0 (the reference's -inf / inf is NaN); NaN stays NaN.
  EXPECT_EQ(cpu::SiluFast(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(cpu::SiluFast(std::nanf(""))));
}

TEST(SiluFastTest, SwiGluRowsEqualTheReferenceElementwise) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const GatedRows g(seed, cpu::SwiGluF32, cpu::SwiGluFastF32);
  for (size_t i = 0; i < g.want.size(); ++i) {
    // silu's 4 roundings and the product's one.
    ASSERT_NEAR(g.got[i], g.want[i], 6e-7f * std::fabs(g.want[i])) << "element " << i;
  }
}

}  // namespace
}  // namespace kvs
