// make-model's writer: what it writes loads back (single file and sharded with an index) and
// holds the random source's values rounded to bf16.
#include "runtime/model/checkpoint_writer.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "nlohmann/json.hpp"

namespace kvs {
namespace {

namespace fs = std::filesystem;

TEST(CheckpointWriterTest, WritesShardedCheckpointThatLoadsBackAsBf16OfTheSource) {
  auto src = OpenRandomWeights("random:smollm2-135m:3");
  ASSERT_TRUE(src.ok());
  const fs::path dir = fs::path(::testing::TempDir()) / "made_model";
  fs::remove_all(dir);
  const nlohmann::json config = {{"model_type", "llama"}, {"vocab_size", 49152}, {"hidden_size", 576},
                                 {"intermediate_size", 1536}, {"num_hidden_layers", 30}, {"num_attention_heads", 9},
                                 {"num_key_value_heads", 3}, {"max_position_embeddings", 8192},
                                 {"rope_theta", 100000.0}, {"tie_word_embeddings", true}};
  ASSERT_TRUE(WriteHfCheckpoint(**src, config, dir.string(), 64 << 20).ok());
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir / "model-00001-of-00005.safetensors"));
  auto back = OpenHfWeights(dir.string());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->config().num_kv_heads, 3);
  for (const TensorSpec& t : HfTensorList((*src)->config())) {
    if (t.name.find("layers.7.") == std::string::npos && t.name.find("embed") == std::string::npos) continue;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    std::vector<float> want(n), got(n);
    ASSERT_TRUE((*src)->ReadF32(t.name, t.shape, want).ok());
    ASSERT_TRUE((*back)->ReadF32(t.name, t.shape, got).ok()) << t.name;
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], Bf16BitsToFloat(FloatToBf16Bits(want[i]))) << t.name << " " << i;
  }
  EXPECT_EQ(WriteHfCheckpoint(**src, config, dir.string(), 64 << 20).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace kvs
