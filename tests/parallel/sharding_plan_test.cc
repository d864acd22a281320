// Tensor-parallel layouts: every head, FFN row and vocab row is owned exactly once; each rank
// holds the KV heads its query heads read; KV memory is balanced within one head; impossible
// tp values are refused with the valid range.
#include "parallel/sharding_plan.h"

#include "gtest/gtest.h"
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

}  // namespace
}  // namespace kvs
