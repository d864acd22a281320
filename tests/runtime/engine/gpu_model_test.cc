// The whole model on the CUDA backend (bf16): random checkpoints against HF transformers'
// float32 logits at bf16 tolerance, and SmolLM2's greedy chat answer identical to the CPU's.
// Skips with a reason where no GPU is visible.
#include <cmath>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GoldenPath;
using testing::LoadCpuModel;
using testing::ReadJson;

std::unique_ptr<Backend> Gpu() {
  auto b = CudaBackend::Create(0);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::unique_ptr<Backend>(std::move(*b)) : nullptr;
}

class GpuCheckpointTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU visible: GPU model tests run on the GPU machine";
  }
};

TEST_P(GpuCheckpointTest, LogitsMatchTransformersWithinBf16Tolerance) {
  auto lm = LoadCpuModel(GoldenPath("models/" + GetParam()), Gpu());
  ASSERT_NE(lm, nullptr);
  const auto golden = ReadJson(GoldenPath("models/" + GetParam() + ".json"));
  const int32_t vocab = lm->weights->config().vocab_size;
  int rows = 0, top1_same = 0;
  double worst = 0;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> got = testing::PrefillLogits(*lm, ids, /*all_rows=*/true);
    ASSERT_EQ(got.size(), ids.size() * vocab);
    for (size_t row = 0; row < ids.size(); ++row) {
      const auto want = p["logits"][row].get<std::vector<float>>();
      double num = 0, den = 0;
      int g1 = 0, w1 = 0;
      for (int32_t i = 0; i < vocab; ++i) {
        const float gv = got[row * vocab + i];
        ASSERT_FALSE(std::isnan(gv));
        num += (gv - want[i]) * (gv - want[i]);
        den += want[i] * want[i];
        if (gv > got[row * vocab + g1]) g1 = i;
        if (want[i] > want[w1]) w1 = i;
      }
      worst = std::max(worst, std::sqrt(num / den));
      top1_same += g1 == w1;
      ++rows;
    }
  }
  std::printf("%s on GPU: worst rel logit error %.2e, top-1 agrees at %d of %d positions\n", GetParam().c_str(), worst,
              top1_same, rows);
  EXPECT_LT(worst, 3e-2);  // bf16 weights and activations against float32
  EXPECT_GE(top1_same * 10, rows * 9);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GpuCheckpointTest, ::testing::Values("tiny-llama31", "tiny-qwen2", "tiny-mistral"));

TEST(GpuSmolLm2Test, ChatAnswerIsTheSameOnGpuAndCpu) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU visible";
  KVS_REQUIRE_SMOLLM2(path);
  const auto golden = ReadJson(GoldenPath("models/smollm2.json"));
  const auto chat = golden["prompts"][0]["prompt_ids"].get<std::vector<int32_t>>();
  auto gpu = LoadCpuModel(path, Gpu());
  ASSERT_NE(gpu, nullptr);
  EngineConfig config;
  config.kv_cache_bytes = 256 << 20;
  // The CPU's greedy answer equals HF's (reference_model_test); the GPU must give it too, up to
  // the end of the answer (<|im_end|>, id 2).
  auto want = golden["prompts"][0]["greedy"].get<std::vector<int32_t>>();
  want.resize(std::find(want.begin(), want.end(), 2) - want.begin());
  auto got = testing::RunGreedy(*gpu, {chat}, static_cast<int32_t>(want.size()), config)[0];
  EXPECT_EQ(got, want);
  const auto text = gpu->model->tokenizer->Decode(got, true);
  std::printf("SmolLM2 on GPU: %s\n", text.c_str());
}

}  // namespace
}  // namespace kvs
