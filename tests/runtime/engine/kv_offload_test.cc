// KV offload: a sequence longer than the device cache keeps the rest of its KV in offload blocks
// (host memory the kernels address in place, kv_cache.h) and generates exactly the tokens it
// generates with a cache that holds it — alone, and beside an older sequence that takes device
// blocks back from it as it grows.
#include "gtest/gtest.h"
#include "tests/support/offload_run.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GenerateWithOffload;
using testing::RandomPrompt;

TEST(KvOffloadTest, ALongSequenceGeneratesWhatACacheThatHoldsItGenerates) {
  auto lm = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  const int32_t vocab = lm->weights->config().vocab_size;
  const std::vector<int32_t> long_prompt = RandomPrompt(70, 1, vocab);  // 90 tokens: 23 blocks of 4
  const testing::OffloadOutcome fits = GenerateWithOffload(*lm, {long_prompt}, 4, 64, 0);
  const testing::OffloadOutcome offloaded = GenerateWithOffload(*lm, {long_prompt}, 4, 10, 16);
  EXPECT_EQ(fits.offloaded, 0);
  EXPECT_EQ(offloaded.offloaded, 13);
  EXPECT_GT(offloaded.staged, 0) << "later prefill chunks read the offloaded blocks through the window";
  EXPECT_EQ(fits.staged, 0);
  EXPECT_EQ(offloaded.outputs, fits.outputs);

  // An older, shorter sequence grows while the long one runs: it takes device blocks back (the
  // long one's move to the offload tier) instead of preempting a context the device cannot hold.
  const std::vector<std::vector<int32_t>> both = {RandomPrompt(6, 2, vocab), long_prompt};
  const testing::OffloadOutcome both_fit = GenerateWithOffload(*lm, both, 4, 64, 0);
  const testing::OffloadOutcome both_offloaded = GenerateWithOffload(*lm, both, 4, 10, 20);
  EXPECT_GT(both_offloaded.demoted, 0);
  EXPECT_EQ(both_offloaded.preemptions, 0);
  EXPECT_EQ(both_offloaded.outputs, both_fit.outputs);
}

TEST(KvOffloadTest, WithoutOffloadTheRequestIsRefusedNamingTheOption) {
  auto lm = testing::LoadCpuModel(testing::GoldenPath("models/tiny-llama31"));
  ASSERT_NE(lm, nullptr);
  EngineConfig c;
  c.scheduler.block_size = 4;
  c.kv_cache_bytes = 10 * KvCache::BytesPerBlock(lm->weights->config(), KvDType::kF32, c.scheduler.block_size);
  auto engine = Engine::Create(*lm->backend, *lm->weights, nullptr, c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  SamplingParams p;
  p.max_tokens = 20;
  const absl::Status s = (*engine)->Add(Request{"long", RandomPrompt(70, 1, lm->weights->config().vocab_size), p});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("--kv-offload-memory"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvs
