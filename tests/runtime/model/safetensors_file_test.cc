// Safetensors and HF checkpoint loading: corruption and inconsistency are named errors.
#include "runtime/model/safetensors_file.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "runtime/model/weight_source.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

std::vector<uint8_t> Safetensors(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> b(8);
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

absl::Status OpenStatus(const std::string& header, size_t data) {
  return SafetensorsFile::Open(testing::WriteTemp("t.safetensors", Safetensors(header, data))).status();
}

TEST(SafetensorsFileTest, AcceptsAValidFile) {
  auto f = SafetensorsFile::Open(testing::WriteTemp(
      "ok.safetensors", Safetensors(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}})", 12)));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_NE((*f)->Find("w"), nullptr);
  EXPECT_EQ((*f)->Find("w")->shape, (std::vector<int64_t>{2, 3}));
}

TEST(SafetensorsFileTest, RejectsCorruptionWithNamedErrors) {
  EXPECT_NE(OpenStatus(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8).message().find("truncated"),
            std::string::npos);
  EXPECT_NE(OpenStatus(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}})", 16).message().find("do not match"),
            std::string::npos);
  EXPECT_NE(OpenStatus(R"({"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 4]}})", 4).message().find("unknown dtype 'Q9'"),
            std::string::npos);
  EXPECT_NE(OpenStatus(R"({"w": {"dtype": "F32", "shape": [2]}})", 8).message().find("malformed header entry"),
            std::string::npos);
  EXPECT_NE(OpenStatus("{oops", 0).message().find("not a JSON object"), std::string::npos);
  EXPECT_NE(OpenStatus(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12).message().find("overlap"),
            std::string::npos);
  // A header length pointing past the end.
  std::vector<uint8_t> b(8, 0xff);
  EXPECT_FALSE(SafetensorsFile::Open(testing::WriteTemp("len.safetensors", b)).ok());
}

TEST(SafetensorsFileTest, UnsupportedDtypeIsNamedOnRead) {
  auto f = SafetensorsFile::Open(testing::WriteTemp(
      "i8.safetensors", Safetensors(R"({"w": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}})", 4)));
  ASSERT_TRUE(f.ok());
  std::vector<float> out(4);
  auto s = SafetensorsToF32(*(*f)->Find("w"), (*f)->path(), out);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("dtype I8"), std::string::npos);
}

TEST(HfCheckpointTest, ShardedIndexAndErrors) {
  auto ok = OpenHfWeights(testing::GoldenPath("models/tiny-qwen2"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE((*ok)->config().attention_bias);
  EXPECT_TRUE((*ok)->Has("model.layers.1.self_attn.k_proj.bias"));

  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "broken_ckpt";
  fs::remove_all(dir);
  fs::copy(testing::GoldenPath("models/tiny-qwen2"), dir);
  // Truncate one shard: opening must name it.
  const fs::path shard = dir / "model-00002-of-00005.safetensors";
  fs::resize_file(shard, fs::file_size(shard) / 2);
  auto bad = OpenHfWeights(dir.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model-00002-of-00005.safetensors"), std::string::npos) << bad.status();

  fs::remove_all(dir);
  fs::create_directories(dir);
  auto none = OpenHfWeights(dir.string());
  EXPECT_NE(none.status().message().find("config.json"), std::string::npos) << none.status();
  std::ofstream(dir / "config.json") << R"({"model_type": "llama", "vocab_size": 8, "hidden_size": 8,
      "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})";
  auto no_weights = OpenHfWeights(dir.string());
  EXPECT_NE(no_weights.status().message().find("no model.safetensors"), std::string::npos) << no_weights.status();
}

}  // namespace
}  // namespace kvs
