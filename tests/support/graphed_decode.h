// Runs the same decode steps through two runners of one model — one replaying recorded graphs
// of padded batches, one running every op directly — and compares their logits step by step.
// Both take the eager runner's greedy tokens, so their inputs stay identical.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/model_runner.h"
#include "runtime/kv/kv_cache.h"
#include "tests/support/engine_harness.h"

namespace kvs::testing {

struct GraphedDecodeReport {
  double max_rel_err = 0;    // ||graphed - eager|| / ||eager|| over a step's logits, worst step
  int argmax_differs = 0;    // rows whose greedy token differs
  int rows = 0;
  int64_t replays = 0;       // steps the graphed runner replayed
};

inline GraphedDecodeReport CompareGraphedDecode(LoadedCpuModel& lm, int32_t steps) {
  GraphedDecodeReport report;
  const ModelConfig& c = lm.weights->config();
  const int32_t bs = 16, num_seqs = 11, max_blocks = 24, vocab = c.vocab_size;
  // One prompt past 256 tokens: its steps use another context-length class of graphs.
  const int32_t prompt_lens[num_seqs] = {3, 17, 40, 1, 9, 300, 64, 5, 21, 2, 48};
  const int32_t groups = KvGroups(c.num_layers, c.layer_windows).num_groups(), group_blocks = num_seqs * max_blocks + 1;
  auto cache_a = KvCache::Create(*lm.backend, c, lm.backend->DefaultKvDType(), bs, groups * group_blocks);
  auto cache_b = KvCache::Create(*lm.backend, c, lm.backend->DefaultKvDType(), bs, groups * group_blocks);
  EXPECT_TRUE(cache_a.ok() && cache_b.ok());
  RunnerLimits graphed{1024, 16, max_blocks, true}, eager{1024, 16, max_blocks, false};
  auto run_a = ModelRunner::Create(*lm.backend, *lm.weights, *cache_a, graphed);
  auto run_b = ModelRunner::Create(*lm.backend, *lm.weights, *cache_b, eager);
  EXPECT_TRUE(run_a.ok() && run_b.ok());
  if (!cache_a.ok() || !cache_b.ok() || !run_a.ok() || !run_b.ok()) return report;
  // Sequence i owns blocks i*max_blocks + 1 .. (block 0 stays unused, as padding reads it).
  std::vector<std::vector<int32_t>> tokens(num_seqs);
  for (int32_t i = 0; i < num_seqs; ++i) {
    for (int32_t k = 0; k < prompt_lens[i]; ++k) tokens[i].push_back((i * 977 + k * 131) % vocab);
  }
  auto slot = [&](int32_t seq, int32_t pos) { return (seq * max_blocks + 1 + pos / bs) * bs + pos % bs; };
  // Each step, some sequences take part (the batch size varies, so several graphs are used).
  for (int32_t step = 0; step <= steps; ++step) {
    std::vector<int32_t> active;
    for (int32_t i = 0; i < num_seqs; ++i) {
      // All of them (16 rows padded), most (8 or 16), or three (4), or the long one alone (1).
      const bool take = step == 0 || step % 5 == 0 ? true : step % 7 == 3 ? i < 3 : step % 7 == 6 ? i == 5 : (i + step) % 4 != 0;
      if (take) active.push_back(i);
    }
    StepInput in;
    in.Clear();
    in.max_blocks_per_seq = 0;
    for (int32_t i : active) in.max_blocks_per_seq = std::max<int32_t>(in.max_blocks_per_seq, (tokens[i].size() + bs - 1) / bs);
    for (int32_t i : active) {
      const int32_t len = static_cast<int32_t>(tokens[i].size());
      const int32_t first = step == 0 ? 0 : len - 1;  // step 0 prefills whole prompts
      for (int32_t p = first; p < len; ++p) {
        in.token_ids.push_back(tokens[i][p]);
        in.positions.push_back(p);
        in.slot_mapping.push_back(slot(i, p));
      }
      in.logit_rows.push_back(static_cast<int32_t>(in.token_ids.size()) - 1);
      in.query_start.push_back(static_cast<int32_t>(in.token_ids.size()));
      in.context_len.push_back(len);
      for (int32_t b = 0; b < in.max_blocks_per_seq; ++b) {
        in.block_table.push_back(b * bs < len ? i * max_blocks + 1 + b : 0);
      }
    }
    RepeatForKvGroups(in, groups, group_blocks, bs);
    auto a = run_a->Execute(in);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return report;
    const std::vector<float> got(a->logits.begin(), a->logits.end());
    auto b = run_b->Execute(in);
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return report;
    const std::vector<float> want(b->logits.begin(), b->logits.end());
    EXPECT_EQ(got.size(), want.size());
    double num = 0, den = 0;
    for (size_t k = 0; k < std::min(got.size(), want.size()); ++k) {
      num += (got[k] - want[k]) * (got[k] - want[k]);
      den += want[k] * want[k];
    }
    report.max_rel_err = std::max(report.max_rel_err, std::isnan(num) ? INFINITY : std::sqrt(num / std::max(den, 1e-30)));
    for (size_t r = 0; r < active.size(); ++r) {
      const float* wr = want.data() + r * vocab;
      const float* gr = got.data() + r * vocab;
      const int32_t next = static_cast<int32_t>(std::max_element(wr, wr + vocab) - wr);
      report.argmax_differs += static_cast<int32_t>(std::max_element(gr, gr + vocab) - gr) != next;
      ++report.rows;
      if (tokens[active[r]].size() < static_cast<size_t>(max_blocks * bs)) tokens[active[r]].push_back(next);
    }
  }
  report.replays = run_a->graph_replays();
  EXPECT_EQ(run_b->graph_replays(), 0);
  return report;
}

}  // namespace kvs::testing
