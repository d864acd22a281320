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
  int64_t host_hit_tokens = 0;
  int64_t host_parked_blocks = 0;
};

// Requests in `waves`: each wave is submitted when the previous one has finished. A small
// `device_blocks` with `host_blocks` of swap space exercises the host tier of the cache.
Outcome RunWaves(testing::LoadedCpuModel& lm, const std::vector<std::vector<std::vector<int32_t>>>& waves, bool cache,
                 int32_t device_blocks = 0, int32_t host_blocks = 0) {
  EngineConfig c;
  c.kv_cache_bytes = 8 << 20;
  c.scheduler.block_size = 4;
  c.scheduler.prefix_caching = cache;
  if (device_blocks > 0) {
    const size_t block = KvCache::BytesPerBlock(lm.weights->config(), KvDType::kF32, c.scheduler.block_size);
    c.kv_cache_bytes = device_blocks * block;
    c.swap_space_bytes = host_blocks * block;
    c.preemption_mode = PreemptionMode::kSwap;  // moving a block always beats recomputing it here
  }
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
  o.host_hit_tokens = (*engine)->scheduler().host_prefix_hit_tokens();
  o.host_parked_blocks = (*engine)->scheduler().host_parked_blocks();
  EXPECT_EQ((*engine)->scheduler().pool().num_free(), (*engine)->kv_cache().num_blocks());
  EXPECT_EQ((*engine)->scheduler().host_pool().num_free(), (*engine)->kv_cache().num_host_blocks());
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

// The host tier keeps evicted prefix blocks warm: a prefix pushed off the device by other
// requests comes back by swap-in, not recompute, and the tokens are unchanged.
TEST(PrefixCacheTest, EvictedPrefixBlocksComeBackFromTheHostTier) {
  auto lm = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  std::vector<int32_t> system;
  for (int i = 0; i < 24; ++i) system.push_back(30 + 7 * i);  // 6 full blocks of 4
  auto with = [&](std::vector<int32_t> tail) {
    std::vector<int32_t> p = system;
    p.insert(p.end(), tail.begin(), tail.end());
    return p;
  };
  std::vector<std::vector<int32_t>> others;  // unrelated prompts that need the whole device cache
  for (int r = 0; r < 3; ++r) {
    std::vector<int32_t> p;
    for (int i = 0; i < 26; ++i) p.push_back(300 + 11 * r + i);
    others.push_back(p);
  }
  const std::vector<std::vector<std::vector<int32_t>>> waves = {
      {with({5})}, {others[0]}, {others[1]}, {others[2]}, {with({6, 7})}, {with({8})}};
  const Outcome off = RunWaves(*lm, waves, false, 12, 64);
  const Outcome on = RunWaves(*lm, waves, true, 12, 64);
  EXPECT_EQ(on.outputs, off.outputs);
  EXPECT_GT(on.host_parked_blocks, 0) << "evicted prefix blocks should have been parked in the host tier";
  EXPECT_GE(on.host_hit_tokens, 16) << "the shared prefix should have come back from the host";
  EXPECT_EQ(off.host_hit_tokens, 0);
  std::printf("[host tier] %lld blocks parked on the host, %lld prompt tokens swapped back in, %lld prefix hits in all\n",
              static_cast<long long>(on.host_parked_blocks), static_cast<long long>(on.host_hit_tokens),
              static_cast<long long>(on.hit_tokens));
}

}  // namespace
}  // namespace kvs
