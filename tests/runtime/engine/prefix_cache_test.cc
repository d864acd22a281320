// Prefix caching changes nothing but speed: the same greedy tokens with it on and off, for
// prompts that share whole blocks, arriving together or one after another, and the reuse is
// counted.
#include "gtest/gtest.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

struct Outcome {
  std::vector<std::vector<int32_t>> outputs;
  int64_t hit_tokens = 0;
};

// Requests in `waves`: each wave is submitted when the previous one has finished.
Outcome RunWaves(testing::LoadedCpuModel& lm, const std::vector<std::vector<std::vector<int32_t>>>& waves, bool cache) {
  EngineConfig c;
  c.kv_cache_bytes = 8 << 20;
  c.block_size = 4;
  c.prefix_caching = cache;
  auto engine = Engine::Create(*lm.backend, *lm.weights, nullptr, c);
  EXPECT_TRUE(engine.ok());
  Outcome o;
  int id = 0;
  for (const auto& wave : waves) {
    for (const auto& prompt : wave) {
      SamplingParams p;
      p.max_tokens = 12;
      p.ignore_eos = true;
      EXPECT_TRUE((*engine)->Add(Request{std::to_string(id++), prompt, p}).ok());
    }
    while ((*engine)->HasWork()) {
      EXPECT_TRUE((*engine)->Step().ok());
      (*engine)->scheduler().CheckInvariants();
    }
  }
  o.outputs.resize(id);
  for (auto& r : (*engine)->TakeResults()) o.outputs[std::stoi(r.id)] = r.output_ids;
  o.hit_tokens = (*engine)->scheduler().prefix_hit_tokens();
  EXPECT_EQ((*engine)->scheduler().pool().num_free(), (*engine)->kv_cache().num_blocks());
  return o;
}

TEST(PrefixCacheTest, OutputsWithTheCacheEqualOutputsWithout) {
  auto lm = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  const std::vector<int32_t> system = {1, 17, 33, 99, 4, 250, 8, 61, 2, 9, 14, 77};  // 3 blocks
  auto with = [&](std::vector<int32_t> tail) {
    std::vector<int32_t> p = system;
    p.insert(p.end(), tail.begin(), tail.end());
    return p;
  };
  const std::vector<std::vector<std::vector<int32_t>>> waves = {
      {with({5, 6}), with({7}), system},           // together: the first computes, the rest may hit
      {with({5, 6, 40, 41}), with({100, 3, 3}), system},  // later: hits on cached, parked blocks
  };
  const Outcome off = RunWaves(*lm, waves, false);
  const Outcome on = RunWaves(*lm, waves, true);
  EXPECT_EQ(on.outputs, off.outputs);
  EXPECT_EQ(off.hit_tokens, 0);
  EXPECT_GE(on.hit_tokens, 3 * 12) << "the second wave's shared system prompt should come from the cache";
}

}  // namespace
}  // namespace kvs
