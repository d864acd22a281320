// Greedy generations through an Engine whose KV cache holds `device_blocks` blocks in device
// memory and `offload_blocks` more in the offload tier (kv_cache.h), with the scheduler's
// offload counters — for the CPU and GPU offload tests.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/engine_harness.h"

namespace kvs::testing {

struct OffloadOutcome {
  std::vector<std::vector<int32_t>> outputs;
  int64_t offloaded = 0, demoted = 0, preemptions = 0;
  int64_t staged = 0;  // offload blocks staged into the device window for prefill chunks
};

inline OffloadOutcome GenerateWithOffload(LoadedCpuModel& lm, const std::vector<std::vector<int32_t>>& prompts,
                                          int32_t block_size, int32_t device_blocks, int32_t offload_blocks,
                                          int32_t max_tokens = 20) {
  EngineConfig c;
  c.scheduler.block_size = block_size;
  c.scheduler.max_tokens_per_step = 4 * block_size;  // chunked prefill: later chunks read the offloaded blocks
  const size_t block =
      KvCache::BytesPerBlock(lm.weights->config(), lm.backend->DefaultKvDType(), c.scheduler.block_size);
  c.kv_cache_bytes = device_blocks * block;
  c.kv_offload_bytes = offload_blocks * block;
  auto engine = Engine::Create(*lm.backend, *lm.weights, nullptr, c);
  EXPECT_TRUE(engine.ok()) << engine.status();
  OffloadOutcome run;
  if (!engine.ok()) return run;
  EXPECT_EQ((*engine)->kv_cache().num_offload_blocks(), offload_blocks);
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplingParams p;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    const absl::Status s = (*engine)->Add(Request{std::to_string(i), prompts[i], p});
    EXPECT_TRUE(s.ok()) << s;
  }
  while ((*engine)->HasWork()) {
    auto ev = (*engine)->Step();
    EXPECT_TRUE(ev.ok()) << ev.status();
    if (!ev.ok()) break;
    (*engine)->scheduler().CheckInvariants();
  }
  run.outputs.resize(prompts.size());
  for (auto& r : (*engine)->TakeResults()) run.outputs[std::stoul(r.id)] = r.output_ids;
  const Scheduler& s = (*engine)->scheduler();
  run.offloaded = s.num_offloaded_blocks();
  run.demoted = s.num_demoted_blocks();
  run.preemptions = s.num_preemptions();
  run.staged = (*engine)->offload_staged_blocks();
  EXPECT_EQ(s.pool().num_free(), (*engine)->kv_cache().num_blocks()) << "blocks leaked";
  EXPECT_EQ(s.offload_blocks_held(), 0) << "offload blocks leaked";
  return run;
}

inline std::vector<int32_t> RandomPrompt(int32_t n, uint32_t seed, int32_t vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(n);
  for (int32_t& t : p) t = static_cast<int32_t>(rng() % vocab);
  return p;
}

}  // namespace kvs::testing
