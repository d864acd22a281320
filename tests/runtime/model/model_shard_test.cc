// A tensor-parallel rank's weights are exactly the rows/columns of the whole model's that its
// shard names — for a checkpoint read from files and for a random model filled on the backend.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "parallel/sharding_plan.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/weight_source.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

std::vector<float> Block(const WeightMatrix& m, int64_t cols, Range rows, Range col_range) {
  const DeviceBuffer& b = m.buffer;
  std::vector<float> out;
  const float* p = b.as<float>();
  for (int32_t r = rows.begin; r < rows.end; ++r) {
    out.insert(out.end(), p + r * cols + col_range.begin, p + r * cols + col_range.end);
  }
  return out;
}
std::vector<float> All(const DeviceBuffer& b) { return std::vector<float>(b.as<float>(), b.as<float>() + b.bytes() / 4); }
std::vector<float> All(const WeightMatrix& m) { return All(m.buffer); }

void ExpectShardsSliceTheWhole(const WeightSource& src, int32_t tp) {
  CpuBackend be(size_t{1} << 30);
  auto whole = ModelWeights::Load(src, be);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const ModelConfig& c = src.config();
  auto plan = PlanSharding(c, tp);
  ASSERT_TRUE(plan.ok());
  const int32_t d = c.head_dim, h = c.hidden_size, q_all = c.num_q_heads * d, kv_all = c.num_kv_heads * d;
  for (int32_t r = 0; r < tp; ++r) {
    const ModelShard& s = plan->ranks[r];
    auto part = ModelWeights::Load(src, be, s);
    ASSERT_TRUE(part.ok()) << part.status();
    SCOPED_TRACE("tp " + std::to_string(tp) + " rank " + std::to_string(r));
    const Range all_h{0, h}, q = s.ComputedQHeads(c);
    const Range q_rows{q.begin * d, q.end * d}, kv_rows{s.kv_heads.begin * d, s.kv_heads.end * d};
    for (int32_t l = 0; l < c.num_layers; ++l) {
      const LayerWeights& w = whole->layers()[l];
      const LayerWeights& p = part->layers()[l];
      std::vector<float> want = Block(w.qkv, h, q_rows, all_h);
      for (Range rows : {Range{q_all + kv_rows.begin, q_all + kv_rows.end},
                         Range{q_all + kv_all + kv_rows.begin, q_all + kv_all + kv_rows.end}}) {
        const auto k = Block(w.qkv, h, rows, all_h);
        want.insert(want.end(), k.begin(), k.end());
      }
      EXPECT_EQ(All(p.qkv), want) << "qkv, layer " << l;
      EXPECT_EQ(All(p.o), Block(w.o, q_all, all_h, Range{s.q_heads.begin * d, s.q_heads.end * d})) << "o, layer " << l;
      std::vector<float> gate_up = Block(w.gate_up, h, s.intermediate, all_h);
      const auto up = Block(w.gate_up, h, Range{c.intermediate_size + s.intermediate.begin, c.intermediate_size + s.intermediate.end}, all_h);
      gate_up.insert(gate_up.end(), up.begin(), up.end());
      EXPECT_EQ(All(p.gate_up), gate_up) << "gate_up, layer " << l;
      EXPECT_EQ(All(p.down), Block(w.down, c.intermediate_size, all_h, s.intermediate)) << "down, layer " << l;
      EXPECT_EQ(All(p.attn_norm), All(w.attn_norm));
    }
    const TensorView pe = part->embed(), we = whole->embed();
    ASSERT_EQ(pe.rows, s.vocab.size());
    EXPECT_EQ(std::vector<float>(static_cast<float*>(pe.data), static_cast<float*>(pe.data) + pe.NumElements()),
              std::vector<float>(we.Row<float>(s.vocab.begin), we.Row<float>(s.vocab.end)));
    EXPECT_EQ(part->local_config().num_kv_heads, s.kv_heads.size());
  }
}

TEST(ModelShardTest, CheckpointShardsAreSlicesOfTheWholeModel) {
  for (const char* m : {"models/tiny-llama31", "models/tiny-qwen2"}) {
    auto src = OpenWeightSource(testing::GoldenPath(m));
    ASSERT_TRUE(src.ok()) << src.status();
    for (int32_t tp : {2, 3, 4}) ExpectShardsSliceTheWhole(**src, tp);
  }
}

TEST(ModelShardTest, RandomModelShardsAreFilledWithTheWholeModelsValues) {
  // A small preset of the random source: 6 query heads over 3 KV heads, so tp=4 straddles groups.
  const auto dir = std::filesystem::temp_directory_path() / "kvs_shard_presets";
  std::filesystem::create_directories(dir / "models");
  std::ofstream(dir / "models" / "tiny.json") << R"({"model_type": "llama", "vocab_size": 301, "hidden_size": 48,
    "intermediate_size": 70, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 3,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false})";
  setenv("KVS_CONFIG_DIR", dir.c_str(), 1);
  auto src = OpenWeightSource("random:tiny:9");
  unsetenv("KVS_CONFIG_DIR");
  ASSERT_TRUE(src.ok()) << src.status();
  for (int32_t tp : {2, 4, 5}) ExpectShardsSliceTheWhole(**src, tp);
}

}  // namespace
}  // namespace kvs
