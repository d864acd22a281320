// The fast backend's GeGLU (kernels/cpu/gelu_fast.cc) against the reference's std::tanh: its tanh
// within 2e-7 of std::tanh at every float step over [-12, 12] and at the extremes, and whole GeGLU
// rows element by element, with the seed printed on failure.
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

TEST(GeluFastTest, GeGluRowsEqualTheReferenceElementwise) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const int64_t rows = 7, inter = 1003;  // odd width: the vector loop's tail
  std::vector<float> gu(rows * 2 * inter);
  for (auto& x : gu) x = normal(rng);
  std::vector<float> want(rows * inter), got(rows * inter);
  cpu::GeluGluF32(gu.data(), 2 * inter, rows, inter, want.data(), inter);
  cpu::GeluGluFastF32(gu.data(), 2 * inter, rows, inter, got.data(), inter);
  for (size_t i = 0; i < want.size(); ++i) {
    const int64_t r = static_cast<int64_t>(i) / inter, c = static_cast<int64_t>(i) % inter;
    const float x = gu[r * 2 * inter + c], up = gu[r * 2 * inter + inter + c];
    // 0.5 x up (1 + tanh): the tanh's 2e-7, scaled, plus float rounding of the products.
    ASSERT_NEAR(got[i], want[i], 1e-7f * std::fabs(x * up) + 1e-6f * std::fabs(want[i])) << "element " << i;
  }
}

}  // namespace
}  // namespace kvs
