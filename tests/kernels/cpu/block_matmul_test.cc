// The fast CPU matmul (weights in GGML blocks, int8 activations) against the float32 reference on
// the same blocks, element by element, for every block type and every kernel set this CPU runs.
//
// The bound is derived, not tuned: activations are rounded to int8 per block of 32 with scale
// d = max|x| / 127, so each x moves by at most d / 2, and an output moves by at most
// sum_blocks d_b / 2 * sum_{e in b} |w_e|; float32 summation adds a relative 1e-5 of sum |w x|.
#include "kernels/cpu/block_matmul.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/ggml_decode.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/thread_pool.h"
#include "tests/support/ggml_blocks.h"

namespace kvs::cpu {
namespace {

using testing::kBlockTypes;
using testing::RandomGgmlBlocks;

class BlockMatMulTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!SetBlockDotKernel(GetParam())) GTEST_SKIP() << "this CPU does not run the " << GetParam() << " kernels";
  }
  void TearDown() override { SetBlockDotKernel(default_); }
  std::string default_ = BlockDotKernelName();
};

TEST_P(BlockMatMulTest, EveryTypeMatchesTheReferenceWithinTheActivationRounding) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed) + ", kernels " + GetParam());
  for (GgmlType type : kBlockTypes) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    SCOPED_TRACE(std::string(info.name));
    ASSERT_TRUE(BlockMatMulSupports(type));
    // Ragged: 1, 3, 6 and 11 tokens (tiles of 2 or 4 tokens and a rest), 37 outputs (9 groups of 4
    // rows and a lone row), 3 blocks per row.
    for (int64_t rows : {1, 3, 6, 11}) {
      const int64_t k = 3 * info.block_elems, n = 37, x_stride = k + 5, out_stride = n + 3;
      const std::vector<uint8_t> w = RandomGgmlBlocks(type, n, k, rng);
      std::vector<float> wf(n * k);
      DequantizeToF32(type, w, wf);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> x(rows * x_stride, std::numeric_limits<float>::quiet_NaN());  // padding poisoned
      for (int64_t t = 0; t < rows; ++t)
        for (int64_t e = 0; e < k; ++e) x[t * x_stride + e] = normal(rng) * (e % 7 == 0 ? 8.0f : 1.0f);
      std::vector<float> bias(n);
      for (auto& b : bias) b = normal(rng);
      std::vector<float> out(rows * out_stride, -12345.0f);
      MatMulBlocks(type, x.data(), x_stride, w.data(), w.size() / n, bias.data(), rows, k, n, out.data(), out_stride);
      for (int64_t t = 0; t < rows; ++t) {
        for (int64_t j = 0; j < n; ++j) {
          const testing::RoundedDot ref = testing::ReferenceDot(&x[t * x_stride], &wf[j * k], k);
          const double want = bias[j] + ref.value;
          const double got = out[t * out_stride + j];
          ASSERT_LE(std::fabs(got - want), ref.rounding + 1e-5 * ref.magnitude + 1e-6)
              << "token " << t << " of " << rows << ", output " << j << ": got " << got << ", reference " << want;
        }
        for (int64_t j = n; j < out_stride; ++j) ASSERT_EQ(out[t * out_stride + j], -12345.0f) << "wrote past its row";
      }
    }
  }
}

TEST_P(BlockMatMulTest, ANanActivationMakesOnlyItsTokensOutputsNan) {
  const GgmlType type = GgmlType::kQ4_1;
  const int64_t k = 64, n = 9;
  std::mt19937 rng(7);
  const std::vector<uint8_t> w = RandomGgmlBlocks(type, n, k, rng);
  // 3 tokens: tiles straight from the blocks; 9: a prefill's rows decoded once (AVX-512: one
  // 16-row group, 7 of its rows padding; 256 bits: groups of 8 and 1) and a last token alone.
  for (int64_t rows : {3, 9}) {
    std::vector<float> x(rows * k, 0.5f);
    x[1 * k + 40] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> out(rows * n);
    MatMulBlocks(type, x.data(), k, w.data(), w.size() / n, nullptr, rows, k, n, out.data(), n);
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_EQ(std::isnan(out[t * n + j]), t == 1) << rows << " tokens, token " << t << ", output " << j;
        if (t != 1) {
          EXPECT_TRUE(std::isfinite(out[t * n + j])) << rows << " tokens, token " << t << ", output " << j;
        }
      }
    }
  }
}

// Threads split the outputs; the result does not depend on how many there are.
TEST_P(BlockMatMulTest, OneThreadAndTwoGiveIdenticalOutputs) {
  const GgmlType type = GgmlType::kQ6_K;
  const int64_t rows = 5, k = 512, n = 301;
  std::mt19937 rng(11);
  const std::vector<uint8_t> w = RandomGgmlBlocks(type, n, k, rng);
  std::vector<float> x(rows * k);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& v : x) v = normal(rng);
  std::vector<float> one(rows * n), two(rows * n);
  const int before = CpuThreads();
  SetCpuThreads(1);
  MatMulBlocks(type, x.data(), k, w.data(), w.size() / n, nullptr, rows, k, n, one.data(), n);
  SetCpuThreads(2);
  MatMulBlocks(type, x.data(), k, w.data(), w.size() / n, nullptr, rows, k, n, two.data(), n);
  SetCpuThreads(before);
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

// A token's outputs do not depend on the tokens beside it (the engine's batch invariance): every
// type, each of 11 tokens alone against all of them in one call, bit for bit (the batch's whole
// tiles of tokens go through a prefill's decoded rows, the last group of 19 outputs padded).
TEST_P(BlockMatMulTest, ATokensOutputsAreTheSameAloneAndInABatch) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (GgmlType type : kBlockTypes) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    const int64_t rows = 11, k = 2 * info.block_elems, n = 19;
    const std::vector<uint8_t> w = RandomGgmlBlocks(type, n, k, rng);
    std::vector<float> x(rows * k), bias(n);
    for (auto& v : x) v = normal(rng);
    for (auto& v : bias) v = normal(rng);
    std::vector<float> batch(rows * n), alone(n);
    MatMulBlocks(type, x.data(), k, w.data(), w.size() / n, bias.data(), rows, k, n, batch.data(), n);
    for (int64_t t = 0; t < rows; ++t) {
      MatMulBlocks(type, x.data() + t * k, k, w.data(), w.size() / n, bias.data(), 1, k, n, alone.data(), n);
      ASSERT_EQ(std::memcmp(alone.data(), batch.data() + t * n, n * sizeof(float)), 0) << info.name << ", token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, BlockMatMulTest, ::testing::Values("avx-vnni", "avx512-vnni", "avx2", "portable"));

}  // namespace
}  // namespace kvs::cpu
