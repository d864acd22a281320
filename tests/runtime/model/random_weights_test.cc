// Synthetic models: presets load, the backend fill equals the host generator (so CPU, GPU and
// a written checkpoint agree), and the model runs end to end.
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/weight_source.h"
#include "tests/support/engine_harness.h"

namespace kvs {
namespace {

TEST(RandomWeightsTest, PresetShapesAndErrors) {
  auto src = OpenWeightSource("random:llama-3-8b");
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_NEAR((*src)->config().ParameterCount() / 1e9, 8.03, 0.01);
  EXPECT_EQ((*src)->config().KvBytesPerToken(2), 131072);
  EXPECT_NE(OpenWeightSource("random:nope").status().message().find("known: "), std::string::npos);
  EXPECT_EQ(OpenWeightSource("random:llama-3-8b:x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenWeightSource("random:").status().code(), absl::StatusCode::kInvalidArgument);
}

// random:<preset>[:seed]:<GGML block type>: the type comes last, is a block type, and is named when
// it is not one.
TEST(RandomWeightsTest, BlockTypedPresetsAndTheirErrors) {
  for (const char* ok : {"random:smollm2-135m:Q4_K", "random:smollm2-135m:3:Q8_0"}) {
    auto src = OpenWeightSource(ok);
    ASSERT_TRUE(src.ok()) << ok << ": " << src.status();
    EXPECT_TRUE((*src)->StoredBlockType("model.layers.0.mlp.down_proj.weight").has_value()) << ok;
    EXPECT_FALSE((*src)->StoredBlockType("model.layers.0.input_layernorm.weight").has_value()) << ok;
  }
  for (const char* bad : {"random:smollm2-135m:Q9_X", "random:smollm2-135m:Q4_K:3", "random:smollm2-135m:F16",
                          "random:smollm2-135m:3:4:Q4_K"}) {
    const auto st = OpenWeightSource(bad).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find(bad), std::string::npos) << bad << ": " << st.message();
  }
  const std::string q9 = std::string(OpenWeightSource("random:smollm2-135m:Q9_X").status().message());
  EXPECT_NE(q9.find("block type"), std::string::npos) << q9;
  EXPECT_NE(q9.find("F8_E4M3"), std::string::npos) << q9;
}

TEST(RandomWeightsTest, BackendFillEqualsHostGeneration) {
  auto src = OpenWeightSource("random:smollm2-135m:5");
  ASSERT_TRUE(src.ok());
  CpuBackend cpu(size_t{2} << 30);
  auto w = ModelWeights::Load(**src, cpu);
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = (*src)->config();
  // Layer 3's k_proj sits after q_proj in the fused QKV buffer.
  const int64_t q = static_cast<int64_t>(c.num_q_heads) * c.head_dim, kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  std::vector<float> want(kv * c.hidden_size);
  const int64_t shape[] = {kv, c.hidden_size};
  ASSERT_TRUE((*src)->ReadF32("model.layers.3.self_attn.k_proj.weight", shape, want).ok());
  const float* got = w->layers()[3].qkv.buffer.as<float>() + q * c.hidden_size;
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;
  // Different seeds give different models.
  auto other = OpenWeightSource("random:smollm2-135m:6");
  std::vector<float> diff(want.size());
  ASSERT_TRUE((*other)->ReadF32("model.layers.3.self_attn.k_proj.weight", shape, diff).ok());
  EXPECT_NE(diff, want);
}

TEST(RandomWeightsTest, RunsThroughTheEngine) {
  auto lm = testing::LoadCpuModel("random:smollm2-135m");
  ASSERT_NE(lm, nullptr);
  EngineConfig config;
  config.kv_cache_bytes = 32 << 20;
  const auto out = testing::RunGreedy(*lm, {{1, 2, 3, 4, 5}, {9, 8, 7}}, 6, config);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].size(), 6u);
  EXPECT_EQ(testing::RunGreedy(*lm, {{1, 2, 3, 4, 5}}, 6, config)[0], out[0]) << "batched == alone";
}

}  // namespace
}  // namespace kvs
