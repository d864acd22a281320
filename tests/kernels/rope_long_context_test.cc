// Rotary embeddings at positions far past 128K, against HF transformers (tests/goldens/rope,
// made by tests/reference/make_rope_goldens.py): Llama-3.1-8B's llama3-scaled frequencies, the CPU
// reference's rotation (float32, as HF), and the CUDA kernel's (bf16 out) where a GPU is visible.
// Long-context serving is only right if position 262143 is rotated as the model expects.
#include <cmath>
#include <fstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "runtime/model/model_config.h"
#include "runtime/model/weight_source.h"
#if defined(KVS_HAVE_CUDA)
#include "kernels/cuda/cuda_backend.h"
#endif

namespace kvs {
namespace {

struct Golden {
  int32_t head_dim = 0, heads = 0;
  std::vector<int32_t> positions;
  std::vector<float> x, rotated, inv_freq;  // rotated: [positions][heads * head_dim]
};

Golden Load() {
  std::ifstream in(std::string(KVS_TEST_DATA) + "/rope/llama31_long_positions.json");
  EXPECT_TRUE(in.good()) << "golden missing: run tests/reference/make_rope_goldens.py";
  const auto j = nlohmann::json::parse(in);
  Golden g;
  g.head_dim = j.at("head_dim");
  g.heads = j.at("heads");
  g.positions = j.at("positions").get<std::vector<int32_t>>();
  g.x = j.at("x").get<std::vector<float>>();
  for (const auto& row : j.at("rotated")) {
    for (float v : row) g.rotated.push_back(v);
  }
  g.inv_freq = j.at("inv_freq").get<std::vector<float>>();
  return g;
}

std::vector<float> Inputs(const Golden& g) {  // the same row at every position
  std::vector<float> rows;
  for (size_t p = 0; p < g.positions.size(); ++p) rows.insert(rows.end(), g.x.begin(), g.x.end());
  return rows;
}

ModelConfig Llama31() {
  auto src = OpenWeightSource("random:llama-3.1-8b");
  EXPECT_TRUE(src.ok()) << src.status();
  return (*src)->config();
}

TEST(RopeLongContextTest, Llama31FrequenciesEqualTransformers) {
  const Golden g = Load();
  const std::vector<float> ours = ComputeRopeInvFreq(Llama31(), nullptr);
  ASSERT_EQ(ours.size(), g.inv_freq.size());
  // Within a few float32 ulps: transformers raises theta to a float32 power, we compute in double
  // and round once.
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_NEAR(ours[i], g.inv_freq[i], 5e-7 * std::fabs(g.inv_freq[i])) << i;
}

TEST(RopeLongContextTest, CpuRotationMatchesTransformersUpTo262143) {
  const Golden g = Load();
  const std::vector<float> inv = ComputeRopeInvFreq(Llama31(), nullptr);
  CpuBackend cpu(size_t{1} << 30);
  std::vector<float> rows = Inputs(g);
  const int64_t n = static_cast<int64_t>(g.positions.size()), width = int64_t{g.heads} * g.head_dim;
  ASSERT_TRUE(cpu.Rope(TensorView::Contiguous(rows.data(), DType::kF32, n, width), g.heads, g.positions.data(),
                       RopeTable{inv.data(), g.head_dim})
                  .ok());
  for (int64_t p = 0; p < n; ++p) {
    double worst = 0;
    for (int64_t i = 0; i < width; ++i) worst = std::max(worst, std::fabs(double{rows[p * width + i]} - g.rotated[p * width + i]));
    // Angles are position x inv_freq in float32 on both sides; an ulp of inv_freq at position
    // 262143 moves an angle by ~1e-5 rad, so outputs of magnitude ~3 agree to ~1e-4.
    EXPECT_LT(worst, 2e-4) << "position " << g.positions[p];
  }
}

#if defined(KVS_HAVE_CUDA)
TEST(RopeLongContextTest, CudaRotationMatchesTransformersUpTo262143) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU visible: CUDA tests run on the GPU machine";
  auto gpu = CudaBackend::Create(0);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const Golden g = Load();
  const std::vector<float> inv = ComputeRopeInvFreq(Llama31(), nullptr);
  const int64_t n = static_cast<int64_t>(g.positions.size()), width = int64_t{g.heads} * g.head_dim;
  auto x = (*gpu)->Allocate(n * width * 2);
  auto pos = (*gpu)->Allocate(n * 4);
  auto freq = (*gpu)->Allocate(inv.size() * 4);
  ASSERT_TRUE(x.ok() && pos.ok() && freq.ok());
  ASSERT_TRUE((*gpu)->UploadFloat(Inputs(g), x->View(DType::kBF16, n, width)).ok());
  ASSERT_TRUE((*gpu)->CopyToDevice(g.positions.data(), pos->data(), n * 4).ok());
  ASSERT_TRUE((*gpu)->CopyToDevice(inv.data(), freq->data(), inv.size() * 4).ok());
  ASSERT_TRUE((*gpu)->Rope(x->View(DType::kBF16, n, width), g.heads, pos->as<int32_t>(), RopeTable{freq->as<float>(), g.head_dim}).ok());
  std::vector<float> got(n * width);
  ASSERT_TRUE((*gpu)->DownloadFloat(x->View(DType::kBF16, n, width), got).ok());
  for (int64_t p = 0; p < n; ++p) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < width; ++i) {
      const double d = got[p * width + i] - g.rotated[p * width + i];
      num += d * d;
      den += double{g.rotated[p * width + i]} * g.rotated[p * width + i];
    }
    EXPECT_LT(std::sqrt(num / den), 5e-3) << "position " << g.positions[p];  // bf16 output rounding
  }
}
#endif

}  // namespace
}  // namespace kvs
