// Tensor-parallel layouts: every head, FFN row and vocab row is owned exactly once; each rank
// holds the KV heads its query heads read; KV memory is balanced within one head; impossible
// tp values are refused with the valid range.
#include "parallel/sharding_plan.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/weight_source.h"

namespace kvs {
namespace {

ModelConfig Preset(const std::string& name) {
  auto src = OpenRandomWeights("random:" + name);
  EXPECT_TRUE(src.ok()) << src.status();
  return (*src)->config();
}

void CheckPlan(const ModelConfig& c, int32_t tp) {
  auto plan = PlanSharding(c, tp);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(static_cast<int32_t>(plan->ranks.size()), tp);
  const int32_t group = c.num_q_heads / c.num_kv_heads;
  int32_t q_next = 0, ffn_next = 0, vocab_next = 0, min_kv = 1 << 30, max_kv = 0;
  for (int32_t r = 0; r < tp; ++r) {
    const ModelShard& s = plan->ranks[r];
    EXPECT_EQ(s.q_heads.begin, q_next);
    EXPECT_EQ(s.intermediate.begin, ffn_next);
    EXPECT_EQ(s.vocab.begin, vocab_next);
    EXPECT_GT(s.q_heads.size(), 0);
    q_next = s.q_heads.end;
    ffn_next = s.intermediate.end;
    vocab_next = s.vocab.end;
    for (int32_t h = s.q_heads.begin; h < s.q_heads.end; ++h) {
      EXPECT_GE(h / group, s.kv_heads.begin) << "rank " << r << " lacks the KV head of query head " << h;
      EXPECT_LT(h / group, s.kv_heads.end);
    }
    min_kv = std::min(min_kv, s.kv_heads.size());
    max_kv = std::max(max_kv, s.kv_heads.size());
  }
  EXPECT_EQ(q_next, c.num_q_heads);
  EXPECT_EQ(ffn_next, c.intermediate_size);
  EXPECT_EQ(vocab_next, c.vocab_size);
  EXPECT_LE(max_kv - min_kv, 1) << "KV memory unbalanced at tp=" << tp;
}

TEST(ShardingPlanTest, SmolLm2HeadsThatDoNotDivideTp) {
  const ModelConfig c = Preset("smollm2-135m");  // 9 query heads, 3 KV heads
  for (int32_t tp : {1, 2, 3, 4, 9}) CheckPlan(c, tp);
  auto two = PlanSharding(c, 2);
  EXPECT_EQ(two->ranks[0].q_heads, (Range{0, 4}));
  EXPECT_EQ(two->ranks[0].kv_heads, (Range{0, 2}));  // KV head 1 serves both ranks
  EXPECT_EQ(two->ranks[1].kv_heads, (Range{1, 3}));
  auto four = PlanSharding(c, 4);
  for (int r = 0; r < 4; ++r) EXPECT_LE(four->KvBytesPerToken(c, r, 2), 2 * c.KvBytesPerToken(2) / 3);
}

TEST(ShardingPlanTest, Llama3AtTp8AndReplicatedKvBeyondIt) {
  const ModelConfig c = Preset("llama-3-8b");  // 32 query heads, 8 KV heads
  for (int32_t tp : {1, 2, 4, 8, 16, 32}) CheckPlan(c, tp);
  auto eight = PlanSharding(c, 8);
  for (int r = 0; r < 8; ++r) EXPECT_EQ(eight->ranks[r].kv_heads.size(), 1);
  EXPECT_EQ(eight->KvBytesPerToken(c, 0, 2), c.KvBytesPerToken(2) / 8);
  auto sixteen = PlanSharding(c, 16);
  EXPECT_EQ(sixteen->ranks[0].kv_heads, sixteen->ranks[1].kv_heads) << "KV head 0 replicated on ranks 0 and 1";
  CheckPlan(Preset("llama-3-70b"), 8);
}

TEST(ShardingPlanTest, RefusesImpossibleTpListingValidValues) {
  const ModelConfig c = Preset("smollm2-135m");
  for (int32_t tp : {0, -1, 10}) {
    auto p = PlanSharding(c, tp);
    ASSERT_FALSE(p.ok()) << tp;
    EXPECT_NE(p.status().message().find("valid tp values are 1..9"), std::string::npos) << p.status();
  }
}

// Weights kept in GGML blocks: the FFN rows split along whole blocks (6 Q4_K blocks over 4 ranks:
// 1, 2, 1, 2), and a head split that would cut the attention output's blocks is refused by name.
TEST(ShardingPlanTest, BlockTypedWeightsSplitAlongWholeBlocksOrAreRefusedByName) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "kvs_sharding_blocks";
  std::filesystem::create_directories(dir / "models");
  std::ofstream(dir / "models" / "tiny-blocks.json")
      << R"({"model_type": "llama", "vocab_size": 1024, "hidden_size": 512, "intermediate_size": 1536,
             "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8,
             "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
             "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2})";
  setenv("KVS_CONFIG_DIR", dir.c_str(), 1);
  auto src = OpenWeightSource("random:tiny-blocks:Q4_K");
  unsetenv("KVS_CONFIG_DIR");
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& c = (*src)->config();
  ASSERT_EQ(FfnBlockAlignment(c, **src), 256);
  auto four = PlanSharding(c, 4, FfnBlockAlignment(c, **src));
  ASSERT_TRUE(four.ok());
  const int32_t want[5] = {0, 256, 768, 1024, 1536};
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(four->ranks[r].intermediate.begin, want[r]) << r;
    EXPECT_EQ(four->ranks[r].intermediate.end, want[r + 1]) << r;
  }
  // tp 2: 16 heads of 16 = 256 columns of o_proj a rank, whole blocks: loads.
  auto two = PlanSharding(c, 2, 256);
  ASSERT_TRUE(two.ok());
  {
    CpuBackend be(size_t{1} << 30, CpuMath::kFast);
    EXPECT_TRUE(ModelWeights::Load(**src, be, two->ranks[1]).ok());
  }
  // tp 4: 8 heads = 128 columns, half a block: refused, naming the tensor, its type and the columns.
  CpuBackend be(size_t{1} << 30, CpuMath::kFast);
  const auto w = ModelWeights::Load(**src, be, four->ranks[1]);
  ASSERT_FALSE(w.ok());
  const std::string m(w.status().message());
  EXPECT_NE(m.find("model.layers.0.self_attn.o_proj.weight"), std::string::npos) << m;
  EXPECT_NE(m.find("Q4_K"), std::string::npos) << m;
  EXPECT_NE(m.find("columns [128, 256)"), std::string::npos) << m;
  EXPECT_NE(m.find("would split a block"), std::string::npos) << m;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvs
