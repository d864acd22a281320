// Loads a model on the CPU backend and runs greedy generations through the Engine, for tests.
#pragma once

#include <algorithm>
#include <fstream>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/engine/model_runner.h"
#include "runtime/model/model_weights.h"

namespace kvs::testing {

struct LoadedCpuModel {
  std::unique_ptr<LoadedModel> model;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelWeights> weights;
};

// Loads `path` onto `backend` (the CPU reference when null), its projections quantized at load
// as `quantize` says (--quantize).
inline std::unique_ptr<LoadedCpuModel> LoadCpuModel(const std::string& path, std::unique_ptr<Backend> backend = nullptr,
                                                    WeightQuantization quantize = WeightQuantization::kNone) {
  auto out = std::make_unique<LoadedCpuModel>();
  auto m = OpenModel(path, WeightCheck::kAuto, quantize);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  out->model = std::make_unique<LoadedModel>(*std::move(m));
  out->backend = backend ? std::move(backend) : std::make_unique<CpuBackend>(size_t{8} << 30);
  auto w = ModelWeights::Load(*out->model->source, *out->backend);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  out->weights = std::make_unique<ModelWeights>(*std::move(w));
  return out;
}

// Greedy, EOS ignored, `n` tokens per prompt; all prompts submitted together.
inline std::vector<std::vector<int32_t>> RunGreedy(LoadedCpuModel& lm, const std::vector<std::vector<int32_t>>& prompts,
                                                   int32_t n, EngineConfig config, int64_t* preemptions = nullptr,
                                                   int64_t* swaps = nullptr, int64_t* graph_replays = nullptr) {
  auto engine = Engine::Create(*lm.backend, *lm.weights, nullptr, config);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  for (size_t i = 0; i < prompts.size(); ++i) {
    SamplingParams p;
    p.max_tokens = n;
    p.ignore_eos = true;
    const absl::Status s = (*engine)->Add(Request{std::to_string(i), prompts[i], p});
    EXPECT_TRUE(s.ok()) << s;
  }
  int steps = 0;
  while ((*engine)->HasWork() && steps++ < 100000) {
    auto ev = (*engine)->Step();
    EXPECT_TRUE(ev.ok()) << ev.status();
    if (!ev.ok()) break;
    (*engine)->scheduler().CheckInvariants();
  }
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (auto& r : (*engine)->TakeResults()) out[std::stoul(r.id)] = r.output_ids;
  EXPECT_EQ((*engine)->scheduler().pool().num_free(), (*engine)->kv_cache().num_blocks()) << "blocks leaked";
  EXPECT_EQ((*engine)->scheduler().host_pool().num_free(), (*engine)->kv_cache().num_host_blocks()) << "host blocks leaked";
  if (preemptions) *preemptions = (*engine)->scheduler().num_preemptions();
  if (swaps) *swaps = (*engine)->scheduler().num_swap_preemptions();
  if (graph_replays) *graph_replays = (*engine)->graph_replays();
  return out;
}

// Prefill `ids` as one sequence through ModelRunner (blocks in reverse order, so the block
// table is really followed) and return logits for every row or only the last.
inline std::vector<float> PrefillLogits(testing::LoadedCpuModel& lm, const std::vector<int32_t>& ids, bool all_rows,
                                        std::optional<KvDType> kv_dtype = std::nullopt) {
  const ModelConfig& c = lm.weights->config();
  const int32_t block_size = 4;  // several blocks even for short prompts
  const int32_t blocks = static_cast<int32_t>(ids.size()) / block_size + 1;
  const int32_t groups = KvGroups(c.num_layers, c.layer_windows).num_groups();
  auto cache = KvCache::Create(*lm.backend, c, kv_dtype.value_or(lm.backend->DefaultKvDType()), block_size,
                               groups * (blocks + 3));
  EXPECT_TRUE(cache.ok());
  EXPECT_TRUE(cache->AddResiduals(*lm.backend, 1).ok());  // channel-quantized formats: one sequence's
  RunnerLimits limits{static_cast<int32_t>(ids.size()), static_cast<int32_t>(ids.size()), blocks};
  auto runner = ModelRunner::Create(*lm.backend, *lm.weights, *cache, limits);
  EXPECT_TRUE(runner.ok()) << runner.status();
  StepInput in;
  in.Clear();
  // Blocks in reverse order, so the block table really is followed.
  for (int32_t k = 0; k < static_cast<int32_t>(ids.size()); ++k) {
    in.token_ids.push_back(ids[k]);
    in.positions.push_back(k);
    in.slot_mapping.push_back((blocks + 2 - k / block_size) * block_size + k % block_size);
    if (all_rows || k + 1 == static_cast<int32_t>(ids.size())) in.logit_rows.push_back(k);
  }
  in.query_start.push_back(static_cast<int32_t>(ids.size()));
  in.context_len.push_back(static_cast<int32_t>(ids.size()));
  in.max_blocks_per_seq = blocks;
  for (int32_t b = 0; b < blocks; ++b) in.block_table.push_back(blocks + 2 - b);
  if (KvChannelQuantized(cache->dtype())) PlaceTailsInResiduals(in, cache->ring(), groups);
  RepeatForKvGroups(in, groups, blocks + 3, block_size);
  auto out = runner->Execute(in);
  EXPECT_TRUE(out.ok()) << out.status();
  return std::vector<float>(out->logits.begin(), out->logits.end());
}

// One row of logits against a reference row: the relative error ||got - want|| / ||want||, the
// largest element error, each side's top choice, and the reference's lead over its second choice.
// A NaN in `got` makes rel_error infinite.
struct LogitsRow {
  double rel_error = 0, max_error = 0, want_lead = 0;
  int32_t got_top = 0, want_top = 0;
};
inline LogitsRow CompareLogitsRow(const float* got, const std::vector<float>& want) {
  LogitsRow r;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) r.rel_error = std::numeric_limits<double>::infinity();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
    r.max_error = std::max(r.max_error, static_cast<double>(std::fabs(got[i] - want[i])));
    if (got[i] > got[r.got_top]) r.got_top = static_cast<int32_t>(i);
    if (want[i] > want[r.want_top]) r.want_top = static_cast<int32_t>(i);
  }
  if (r.rel_error == 0) r.rel_error = std::sqrt(num / std::max(den, 1e-30));
  double second = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < want.size(); ++i) {
    if (static_cast<int32_t>(i) != r.want_top) second = std::max(second, static_cast<double>(want[i]));
  }
  r.want_lead = want[r.want_top] - second;
  return r;
}

// `vocab` float32 logits stored raw at `path` (a golden prompt's last_logits_file); empty when the
// file is missing or short.
inline std::vector<float> ReadLogitsFile(const std::string& path, int32_t vocab) {
  std::vector<float> v(vocab);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(vocab) * sizeof(float));
  return f.good() ? v : std::vector<float>{};
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

// Every row of every prompt of a transformers golden (models/*.json: prompt_ids and logits per
// row) prefilled through `lm` and compared with CompareLogitsRow.
inline std::vector<LogitsRow> GoldenLogitsRows(LoadedCpuModel& lm, const nlohmann::json& golden) {
  const int32_t vocab = lm.weights->config().vocab_size;
  std::vector<LogitsRow> rows;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> got = PrefillLogits(lm, ids, /*all_rows=*/true);
    EXPECT_EQ(got.size(), ids.size() * vocab);
    if (got.size() != ids.size() * vocab) continue;
    for (size_t row = 0; row < ids.size(); ++row) {
      rows.push_back(CompareLogitsRow(&got[row * vocab], p["logits"][row].get<std::vector<float>>()));
    }
  }
  return rows;
}

// HF's greedy continuations (a models/*.json golden's prompts) fed back as one prefill each
// (teacher forcing: one near-tie flip cannot change every token after it); `logits_of` returns the
// backend's logits for every row of a sequence. Expects HF's token wherever HF's top-2 margin is at
// least `near_tie`, and elsewhere HF's token within 2 x near_tie of the backend's choice.
struct GreedyAgreement {
  int checked = 0, near_ties = 0;
};
inline GreedyAgreement ExpectHfGreedyWhereClear(const nlohmann::json& golden, int32_t vocab, float near_tie,
                                                const std::function<std::vector<float>(const std::vector<int32_t>&)>& logits_of) {
  GreedyAgreement a;
  for (const auto& p : golden["prompts"]) {
    const auto prompt = p["prompt_ids"].get<std::vector<int32_t>>();
    const auto want = p["greedy"].get<std::vector<int32_t>>();
    const auto margins = p["greedy_margins"].get<std::vector<float>>();
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), want.begin(), want.end() - 1);
    const std::vector<float> logits = logits_of(seq);
    if (logits.size() != seq.size() * static_cast<size_t>(vocab)) {
      ADD_FAILURE() << "logits of " << logits.size() << " values for " << seq.size() << " rows";
      return a;
    }
    for (size_t k = 0; k < want.size(); ++k) {
      const float* row = logits.data() + (prompt.size() - 1 + k) * vocab;
      const int32_t got = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      if (margins[k] < near_tie) {
        ++a.near_ties;
        EXPECT_LT(row[got] - row[want[k]], 2 * near_tie) << "step " << k;
        continue;
      }
      EXPECT_EQ(got, want[k]) << "step " << k << " (HF margin " << margins[k] << ")";
      ++a.checked;
    }
  }
  return a;
}

}  // namespace kvs::testing
