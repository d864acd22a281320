// The CUDA sampler against the CPU one (kernels/common/sampling.h states the rule both follow):
// every draw must pick the same token, over vocabularies of real models, every combination of
// temperature / top-k / top-p, and rows full of ties at the cut-offs. Skips without a GPU.
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/support/gpu_fixture.h"

namespace kvs {
namespace {

class CudaSamplingTest : public testing::GpuFixture<> {
 protected:

  // Draws every request on both backends; returns how many picked different tokens (each one
  // is reported).
  int Mismatches(std::vector<float>& logits, int32_t rows, int32_t vocab, const std::vector<SampleRequest>& reqs) {
    const int32_t n = static_cast<int32_t>(reqs.size());
    std::vector<int32_t> want(n, -2), got(n, -2);
    const TensorView host = TensorView::Contiguous(logits.data(), DType::kF32, rows, vocab);
    EXPECT_TRUE(cpu_.SampleRows(host, reqs.data(), n, want.data()).ok());
    auto dl = gpu_->Allocate(logits.size() * 4);
    auto dr = gpu_->Allocate(reqs.size() * sizeof(SampleRequest));
    auto di = gpu_->Allocate(n * 4);
    EXPECT_TRUE(dl.ok() && dr.ok() && di.ok());
    EXPECT_TRUE(gpu_->CopyToDevice(logits.data(), dl->data(), logits.size() * 4).ok());
    EXPECT_TRUE(gpu_->CopyToDevice(reqs.data(), dr->data(), reqs.size() * sizeof(SampleRequest)).ok());
    EXPECT_TRUE(gpu_->CopyToDevice(got.data(), di->data(), n * 4).ok());  // poison: -2
    EXPECT_TRUE(gpu_->SampleRows(dl->View(DType::kF32, rows, vocab), dr->as<SampleRequest>(), n, di->as<int32_t>()).ok());
    EXPECT_TRUE(gpu_->CopyToHost(di->data(), got.data(), n * 4).ok());
    int bad = 0;
    for (int32_t i = 0; i < n; ++i) {
      if (got[i] == want[i]) continue;
      ++bad;
      const SampleRequest& r = reqs[i];
      ADD_FAILURE() << "vocab " << vocab << " row " << r.row << " T " << r.temperature << " top_k " << r.top_k
                    << " top_p " << r.top_p << " u " << r.uniform << ": gpu " << got[i] << ", cpu " << want[i];
    }
    return bad;
  }

  std::vector<SampleRequest> Grid(int32_t rows, int draws_per_setting) {
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    std::vector<SampleRequest> reqs;
    for (float t : {0.0f, 0.6f, 1.0f, 1.7f}) {
      for (int32_t k : {0, 1, 2, 40, 1000}) {
        for (float p : {1.0f, 0.95f, 0.5f, 0.01f}) {
          for (int d = 0; d < draws_per_setting; ++d) {
            reqs.push_back({static_cast<int32_t>(rng_() % rows), t, k, p, unit(rng_)});
          }
        }
      }
    }
    return reqs;
  }

  std::mt19937 rng_{std::random_device{}()};
  CpuBackend cpu_{size_t{8} << 30};
};

TEST_F(CudaSamplingTest, SameTokensAsTheCpuOnModelVocabularies) {
  for (int32_t vocab : {49152, 128256, 1000, 7}) {
    const int32_t rows = 6;
    std::vector<float> logits(static_cast<size_t>(rows) * vocab);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& x : logits) x = normal(rng_);
    EXPECT_EQ(Mismatches(logits, rows, vocab, Grid(rows, 3)), 0);
  }
}

TEST_F(CudaSamplingTest, TiesAtTheCutOffsResolveAsOnTheCpu) {
  // Logits on a coarse grid: thousands of tokens share each value, so the top-k and top-p
  // thresholds fall inside runs of ties that must be split in id order.
  const int32_t rows = 4, vocab = 32000;
  std::vector<float> logits(static_cast<size_t>(rows) * vocab);
  std::uniform_int_distribution<int> level(-8, 4);
  for (float& x : logits) x = 0.5f * level(rng_);
  for (int32_t i = 0; i < vocab; ++i) logits[3 * static_cast<size_t>(vocab) + i] = 1.0f;  // a flat row
  EXPECT_EQ(Mismatches(logits, rows, vocab, Grid(rows, 4)), 0);
}

TEST_F(CudaSamplingTest, RowsOutsideTheLogitsGetMinusOne) {
  std::vector<float> logits(2 * 10, 0.0f);
  const std::vector<SampleRequest> reqs = {{2, 1.0f, 0, 1.0f, 0.5f}, {-1, 0.0f, 0, 1.0f, 0.5f}};
  EXPECT_EQ(Mismatches(logits, 2, 10, reqs), 0);
}

}  // namespace
}  // namespace kvs
