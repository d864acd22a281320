// config.json parsing (transformers 4 and 5 layouts) and the rotary frequency table.
#include "runtime/model/model_config.h"

#include <cmath>
#include <numbers>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvs {
namespace {

nlohmann::json Llama31V4() {
  return nlohmann::json::parse(R"({
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]})");
}

TEST(ModelConfigTest, ParsesTransformers4Llama31) {
  auto c = ParseHfConfig(Llama31V4(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  // 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB per token in bf16.
  EXPECT_EQ(c->KvBytesPerToken(2), 131072);
  EXPECT_NEAR(c->ParameterCount() / 1e9, 8.03, 0.01);
}

TEST(ModelConfigTest, Llama3RopeScalingFollowsTheThreeBands) {
  auto c = ParseHfConfig(Llama31V4(), "config.json");
  ASSERT_TRUE(c.ok());
  const auto inv = ComputeRopeInvFreq(*c, nullptr);
  ModelConfig plain = *c;
  plain.rope_scaling = {};
  const auto base = ComputeRopeInvFreq(plain, nullptr);
  ASSERT_EQ(inv.size(), 64u);
  int high = 0, low = 0, mid = 0;
  for (size_t i = 0; i < inv.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 8192 / 4.0) {  // short wavelengths kept
      EXPECT_FLOAT_EQ(inv[i], base[i]);
      ++high;
    } else if (wavelen > 8192 / 1.0) {  // long wavelengths divided by the factor
      EXPECT_FLOAT_EQ(inv[i], base[i] / 8.0f);
      ++low;
    } else {  // in between: strictly between the two
      EXPECT_LT(inv[i], base[i]);
      EXPECT_GT(inv[i], base[i] / 8.0f);
      ++mid;
    }
  }
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
}

TEST(ModelConfigTest, RejectsBadConfigsNamingTheField) {
  auto j = Llama31V4();
  j["model_type"] = "gpt2";
  EXPECT_NE(ParseHfConfig(j, "c.json").status().message().find("model_type 'gpt2' is not supported"), std::string::npos);
  j = Llama31V4();
  j.erase("hidden_size");
  EXPECT_NE(ParseHfConfig(j, "c.json").status().message().find("'hidden_size'"), std::string::npos);
  j = Llama31V4();
  j["num_key_value_heads"] = 7;
  EXPECT_NE(ParseHfConfig(j, "c.json").status().message().find("not a multiple of 7 KV heads"), std::string::npos);
  j = Llama31V4();
  j["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_EQ(ParseHfConfig(j, "c.json").status().code(), absl::StatusCode::kUnimplemented);
  j = Llama31V4();
  j["num_hidden_layers"] = "32";
  EXPECT_NE(ParseHfConfig(j, "c.json").status().message().find("must be an integer"), std::string::npos);
  j = Llama31V4();
  j["hidden_act"] = "gelu";
  EXPECT_EQ(ParseHfConfig(j, "c.json").status().code(), absl::StatusCode::kUnimplemented);
  j = Llama31V4();
  j["num_hidden_layers"] = 100000;  // a corrupt header: refused at parse, as inspect and generate see it
  EXPECT_NE(ParseHfConfig(j, "c.json").status().message().find("num_layers 100000 is past kvshard's limit of 1024"),
            std::string::npos);
  j = Llama31V4();
  j["vocab_size"] = 1 << 30;
  EXPECT_NE(ParseHfConfig(j, "c.json").status().message().find("vocab_size"), std::string::npos);
}

TEST(ModelConfigTest, MistralsSlidingWindowIsAWindowInEveryLayer) {
  auto j = nlohmann::json::parse(R"({"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "max_position_embeddings": 32768, "sliding_window": 4096})");
  auto c = ParseHfConfig(j, "c.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->MaxContext(), 32768);  // no longer capped: each layer attends to its last 4,096 keys
  EXPECT_EQ(c->layer_windows, std::vector<int32_t>(32, 4096));
  // A window as long as the context changes nothing, and null means none.
  j["sliding_window"] = 32768;
  EXPECT_TRUE(ParseHfConfig(j, "c.json")->layer_windows.empty());
  j["sliding_window"] = nullptr;
  EXPECT_TRUE(ParseHfConfig(j, "c.json")->layer_windows.empty());
  j["sliding_window"] = -1;
  EXPECT_FALSE(ParseHfConfig(j, "c.json").ok());
}

TEST(ModelConfigTest, Qwen2SlidingWindowsFollowMaxWindowLayersOrLayerTypes) {
  auto j = nlohmann::json::parse(R"({"model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
      "max_position_embeddings": 32768, "sliding_window": 4096, "max_window_layers": 2})");
  EXPECT_TRUE(ParseHfConfig(j, "c.json")->layer_windows.empty());  // use_sliding_window is false by default
  j["use_sliding_window"] = true;
  EXPECT_EQ(ParseHfConfig(j, "c.json")->layer_windows, (std::vector<int32_t>{0, 0, 4096, 4096}));
  j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "full_attention"};
  EXPECT_EQ(ParseHfConfig(j, "c.json")->layer_windows, (std::vector<int32_t>{4096, 0, 0, 0}));
  j["layer_types"] = {"sliding_attention", "chunked_attention", "full_attention", "full_attention"};
  const auto refused = ParseHfConfig(j, "c.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("chunked_attention"), std::string::npos);
}

// google/gemma-3-270m's config.json as transformers 4.57 writes it (layer_types listed).
nlohmann::json Gemma3Text() {
  return nlohmann::json::parse(R"({"model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
      "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 1,
      "head_dim": 256, "query_pre_attn_scalar": 256, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
      "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
      "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
                      "sliding_attention", "full_attention"],
      "hidden_activation": "gelu_pytorch_tanh", "attn_logit_softcapping": null, "final_logit_softcapping": null})");
}

TEST(ModelConfigTest, Gemma3TextHasWindowedLayersAndItsOwnScales) {
  auto c = ParseHfConfig(Gemma3Text(), "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "gemma3");
  EXPECT_TRUE(c->qk_norm);
  EXPECT_TRUE(c->sandwich_norms);
  EXPECT_TRUE(c->tie_word_embeddings);  // Gemma's default when config.json leaves it out
  EXPECT_EQ(c->activation, Activation::kGeluTanh);
  EXPECT_FLOAT_EQ(c->embedding_scale, std::sqrt(640.0f));
  EXPECT_FLOAT_EQ(c->AttentionScale(), 1.0f / 16.0f);
  EXPECT_EQ(c->layer_windows, (std::vector<int32_t>{512, 512, 512, 512, 512, 0}));
  EXPECT_EQ(c->MaxContext(), 32768);  // the window is per layer, not a cap on the context
  EXPECT_EQ(c->rope_local_theta, 10000.0);
  // Without layer_types (older configs): every sliding_window_pattern-th layer is global.
  auto j = Gemma3Text();
  j.erase("layer_types");
  j["sliding_window_pattern"] = 3;
  c = ParseHfConfig(j, "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->layer_windows, (std::vector<int32_t>{512, 512, 0, 512, 512, 0}));
}

TEST(ModelConfigTest, Gemma3AndQwen3RefuseWhatKvshardDoesNotRunByName) {
  auto refused = [](nlohmann::json j, const std::string& needle) {
    auto c = ParseHfConfig(j, "c.json");
    EXPECT_FALSE(c.ok()) << needle;
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status();
  };
  auto j = Gemma3Text();
  j["model_type"] = "gemma3";
  refused(j, "vision tower");
  j = Gemma3Text();
  j["final_logit_softcapping"] = 30.0;
  refused(j, "final_logit_softcapping");
  j = Gemma3Text();
  j["use_bidirectional_attention"] = true;
  refused(j, "use_bidirectional_attention");
  j = Gemma3Text();
  j["layer_types"][2] = "chunked_attention";
  refused(j, "layer type 'chunked_attention'");
  j = Gemma3Text();
  j["layer_types"].erase(0);
  refused(j, "one type per layer");
  j = Gemma3Text();
  j["hidden_activation"] = "gelu";
  refused(j, "hidden_activation 'gelu'");
  j = Gemma3Text();
  j["sliding_window"] = 0;
  refused(j, "sliding_window");

  auto q = nlohmann::json::parse(R"({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
      "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
      "head_dim": 128, "max_position_embeddings": 40960, "hidden_act": "silu", "tie_word_embeddings": true})");
  auto c = ParseHfConfig(q, "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 128);  // explicit: 1024 / 16 would be 64
  EXPECT_TRUE(c->layer_windows.empty());
}

}  // namespace
}  // namespace kvs
