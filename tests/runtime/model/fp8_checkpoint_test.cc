// FP8 (E4M3) Hugging Face checkpoints written by tests/reference/make_fp8_checkpoints.py with the
// `safetensors` and `ml_dtypes` packages, in the three layouts vLLM loads (compressed-tensors per
// channel and per tensor, transformers' fine-grained fp8 blocks), and by llm-compressor itself
// (make_fp8_checkpoint_llmcompressor.py: FP8_DYNAMIC per channel, FP8_BLOCK 128 x 128, bf16 scales)
// and by transformers' FineGrainedFP8Config on a GPU (make_fp8_checkpoint_transformers.py: 32 x 32
// blocks, f32 `_scale_inv`); those three files' logits against transformers are checked in
// reference_model_test:
// - the loader's weights equal ml_dtypes' (or torch's) decode times the scale, element for element;
// - the model runs: its logits stay near transformers' bf16 logits of the unquantized model;
// - what it cannot load is refused at load, naming the file and tensor (a missing scale, a scale
//   of no layout's shape, another quantization method, integer weights).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/weight_source.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

namespace fs = std::filesystem;
using testing::GoldenPath;

const char* const kLayouts[] = {"channel", "tensor", "block"};
const char* const kAllLayouts[] = {"channel", "tensor", "block", "llmc-channel", "llmc-block", "transformers"};
const char* const kQProj = "model.layers.0.self_attn.q_proj.weight";

std::vector<float> ReadF32File(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<float> v(static_cast<size_t>(in.tellg()) / 4);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  return v;
}

TEST(Fp8CheckpointTest, WeightsEqualTheCodesTimesTheirScalesForEveryLayout) {
  for (const char* layout : kAllLayouts) {
    const std::string dir = GoldenPath(std::string("models/tiny-llama31-fp8-") + layout);
    auto src = OpenWeightSource(dir);
    ASSERT_TRUE(src.ok()) << src.status();
    const ModelConfig& c = (*src)->config();
    const std::vector<int64_t> shape = {static_cast<int64_t>(c.num_q_heads) * c.head_dim, c.hidden_size};
    std::vector<float> got(shape[0] * shape[1]);
    ASSERT_TRUE((*src)->ReadF32(kQProj, shape, got).ok()) << layout;
    const std::vector<float> want = ReadF32File(dir + "/dequantized.f32");
    ASSERT_EQ(got.size(), want.size()) << layout;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0) << layout << ": element " << i << " is " << got[i] << ", want "
                                                      << want[i];
    }
  }
}

TEST(Fp8CheckpointTest, TheModelRunsNearTransformersUnquantizedLogits) {
  const auto golden = testing::ReadJson(GoldenPath("models/tiny-llama31.json"));
  for (const char* layout : kLayouts) {
    auto lm = testing::LoadCpuModel(GoldenPath(std::string("models/tiny-llama31-fp8-") + layout));
    ASSERT_NE(lm, nullptr) << layout;
    int rows = 0, clear = 0, clear_same = 0;
    double worst = 0;
    for (const testing::LogitsRow& r : testing::GoldenLogitsRows(*lm, golden)) {
      worst = std::max(worst, r.rel_error);
      // Where transformers' top choice leads by more than twice this row's largest logit error, the
      // quantized model cannot have moved past it: it must choose the same.
      if (r.want_lead > 2 * r.max_error) {
        ++clear;
        clear_same += r.got_top == r.want_top;
      }
      ++rows;
    }
    std::printf("tiny-llama31 FP8 (%s scales) vs transformers bf16: worst rel logit error %.3f; top-1 the same at %d of "
                "the %d of %d positions where the lead exceeds twice the error\n",
                layout, worst, clear_same, clear, rows);
    // E4M3 keeps 3 mantissa bits: each weight moves by up to 1/16 of itself.
    EXPECT_LT(worst, 0.15) << layout;
    EXPECT_EQ(clear_same, clear) << layout;
    EXPECT_GT(clear, 0) << layout;
  }
}

// A copy of the per-channel checkpoint in a temporary folder, its config or its header changed.
class BrokenFp8Test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kvs_fp8_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::copy(GoldenPath("models/tiny-llama31-fp8-channel"), dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void EditConfig(const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(dir_ / "config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    edit(j);
    std::ofstream(dir_ / "config.json") << j.dump();
  }
  // Rewrites model.safetensors' header through `edit` (the data stays where it is).
  void EditHeader(const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(dir_ / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
    edit(h);
    std::string header = h.dump();
    header.resize((header.size() + 7) / 8 * 8, ' ');
    const uint64_t len = header.size();
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header << bytes.substr(8 + n);
  }
  // The error loading the weights gives (every tensor read, as a load reads them).
  std::string LoadError() {
    auto src = OpenWeightSource(dir_.string());
    if (!src.ok()) return std::string(src.status().message());
    const ModelConfig& c = (*src)->config();
    std::vector<float> w(static_cast<size_t>(c.num_q_heads) * c.head_dim * c.hidden_size);
    const std::vector<int64_t> shape = {static_cast<int64_t>(c.num_q_heads) * c.head_dim, c.hidden_size};
    const auto st = (*src)->ReadF32(kQProj, shape, w);
    return st.ok() ? "" : std::string(st.message());
  }
  fs::path dir_;
};

TEST_F(BrokenFp8Test, AMissingScaleIsNamed) {
  EditHeader([](nlohmann::json& h) { h.erase(std::string(kQProj) + "_scale"); });
  const std::string e = LoadError();
  EXPECT_NE(e.find(kQProj), std::string::npos) << e;
  EXPECT_NE(e.find("has no scale"), std::string::npos) << e;
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
}

TEST_F(BrokenFp8Test, AScaleOfNoLayoutsShapeIsNamed) {
  // The per-channel scale re-described as a [4, 32] grid without a block size in the config.
  EditHeader([](nlohmann::json& h) { h[std::string(kQProj) + "_scale"]["shape"] = {4, 32}; });
  const std::string e = LoadError();
  EXPECT_NE(e.find(kQProj), std::string::npos) << e;
  EXPECT_NE(e.find("fits no FP8 layout"), std::string::npos) << e;
}

TEST_F(BrokenFp8Test, OtherQuantizationMethodsAndIntegerWeightsAreRefusedByName) {
  EditConfig([](nlohmann::json& j) { j["quantization_config"]["quant_method"] = "awq"; });
  std::string e = LoadError();
  EXPECT_NE(e.find("quant_method 'awq' is not supported"), std::string::npos) << e;
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EditConfig([](nlohmann::json& j) {
    j["quantization_config"]["quant_method"] = "compressed-tensors";
    j["quantization_config"]["config_groups"]["group_0"]["weights"]["type"] = "int";
    j["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 4;
  });
  e = LoadError();
  EXPECT_NE(e.find("group_0"), std::string::npos) << e;
  EXPECT_NE(e.find("type 'int', 4 bits"), std::string::npos) << e;
}

TEST_F(BrokenFp8Test, ABlockStrategyWithoutItsBlockSizeIsNamed) {
  EditConfig(
      [](nlohmann::json& j) { j["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "block"; });
  std::string e = LoadError();
  EXPECT_NE(e.find("group_0.weights: strategy 'block' needs block_structure"), std::string::npos) << e;
  EditConfig([](nlohmann::json& j) {
    j["quantization_config"]["config_groups"]["group_0"]["weights"]["block_structure"] = {128, 0};
  });
  e = LoadError();
  EXPECT_NE(e.find("needs block_structure, two positive integers"), std::string::npos) << e;
}

TEST_F(BrokenFp8Test, GroupsWithDifferentBlockSizesAreRefusedByName) {
  EditConfig([](nlohmann::json& j) {
    auto& groups = j["quantization_config"]["config_groups"];
    groups["group_0"]["weights"]["strategy"] = "block";
    groups["group_0"]["weights"]["block_structure"] = {128, 128};
    groups["group_1"] = groups["group_0"];
    groups["group_1"]["weights"]["block_structure"] = {64, 64};
  });
  const std::string e = LoadError();
  EXPECT_NE(e.find("block_structure [64, 64] differs from another group's [128, 128]"), std::string::npos) << e;
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
}

}  // namespace
}  // namespace kvs
