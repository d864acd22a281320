// The KV formats through the whole engine on the CPU reference: logits with fp16/bf16/fp8/int8/int4
// KV stay near the f32-KV logits, and a quantized cache survives what the scheduler does to blocks —
// swap to host and back and prefix sharing — bit for bit: outputs
// under forced swap preemption equal the same requests run alone with the same format.
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GoldenPath;
using testing::LoadCpuModel;

struct Drift {
  double rel_rms;     // ||logits - f32 logits|| / ||f32 logits||
  double top1_agree;  // share of rows with the same argmax
};

Drift Compare(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab) {
  double num = 0, den = 0;
  int64_t agree = 0, rows = static_cast<int64_t>(want.size()) / vocab;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * vocab;
    const float* w = want.data() + r * vocab;
    agree += std::max_element(g, g + vocab) - g == std::max_element(w, w + vocab) - w;
  }
  return {std::sqrt(num / den), static_cast<double>(agree) / rows};
}

TEST(KvDTypeTest, LogitsStayNearF32KvForEveryFormat) {
  struct Model {
    std::string path;
    std::vector<int32_t> prompt;
  };
  std::vector<Model> models = {{GoldenPath("models/tiny-llama31"), {}}};
  if (const std::string smol = testing::SmolLm2Path(); !smol.empty()) models.push_back({smol, {}});
  std::mt19937 rng(9);
  for (Model& m : models) {
    auto lm = LoadCpuModel(m.path);
    ASSERT_NE(lm, nullptr);
    const ModelConfig& c = lm->weights->config();
    for (int i = 0; i < 96; ++i) m.prompt.push_back(static_cast<int32_t>(rng() % std::min(c.vocab_size, 5000)));
    const std::vector<float> exact = testing::PrefillLogits(*lm, m.prompt, true, KvDType::kF32);
    for (KvDType t : {KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4}) {
      if (KvDTypeHeadDimProblem(t, c.head_dim) != nullptr) continue;
      const Drift d = Compare(testing::PrefillLogits(*lm, m.prompt, true, t), exact, c.vocab_size);
      std::printf("[kv %s] %s: logits rel RMS %.2e, top-1 agreement %.1f%%\n", KvDTypeName(t).data(), c.name.c_str(),
                  d.rel_rms, 100 * d.top1_agree);
      const double limit = t == KvDType::kINT4 ? 0.2 : t == KvDType::kFP8 ? 0.06 : t == KvDType::kINT8 ? 0.02 : 0.005;
      EXPECT_LT(d.rel_rms, limit) << KvDTypeName(t) << " " << c.name;
      EXPECT_GE(d.top1_agree, t == KvDType::kINT4 ? 0.6 : 0.85) << KvDTypeName(t) << " " << c.name;
    }
  }
}

TEST(KvDTypeTest, QuantizedBlocksSurviveSwapAndPrefixSharing) {
  auto lm = LoadCpuModel(GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  std::mt19937 rng(21);
  std::vector<std::vector<int32_t>> prompts(24);
  const std::vector<int32_t> shared = {7, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};  // a common prefix
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (i % 3 == 0) prompts[i] = shared;
    const size_t extra = 1 + rng() % 30;
    for (size_t j = 0; j < extra; ++j) prompts[i].push_back(static_cast<int32_t>(rng() % 512));
  }
  for (KvDType t : {KvDType::kFP8, KvDType::kINT8, KvDType::kINT4}) {
    EngineConfig base;
    base.kv_dtype = t;
    base.kv_cache_bytes = 16 << 20;
    std::vector<std::vector<int32_t>> alone;
    for (const auto& p : prompts) alone.push_back(testing::RunGreedy(*lm, {p}, 12, base)[0]);
    EngineConfig tight = base;
    tight.block_size = 8;
    const size_t block_bytes = KvCache::BytesPerBlock(lm->weights->config(), t, tight.block_size);
    tight.kv_cache_bytes = 14 * block_bytes;  // 14 blocks for 24 sequences of up to 6 blocks
    tight.preemption_mode = PreemptionMode::kSwap;
    tight.swap_space_bytes = 256 * block_bytes;
    int64_t preemptions = 0, swaps = 0;
    EXPECT_EQ(testing::RunGreedy(*lm, prompts, 12, tight, &preemptions, &swaps), alone) << KvDTypeName(t);
    EXPECT_GT(swaps, 0) << KvDTypeName(t);
  }
}

TEST(KvDTypeTest, AnUnsupportedFormatFailsAtStartUpNamingIt) {
  auto lm = LoadCpuModel(GoldenPath("models/tiny-qwen2"));  // head_dim 16: int4 groups of 32 do not fit
  ASSERT_NE(lm, nullptr);
  EngineConfig c;
  c.kv_dtype = KvDType::kINT4;
  c.kv_cache_bytes = 1 << 20;
  auto engine = Engine::Create(*lm->backend, *lm->weights, nullptr, c);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("int4"), std::string::npos) << engine.status();
  EXPECT_NE(engine.status().message().find("head_dim 16"), std::string::npos) << engine.status();
}

}  // namespace
}  // namespace kvs
