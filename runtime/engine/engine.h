// The single-rank engine: scheduler + model runner + sampling + detokenization, one step at a
// time (plan -> execute -> sample -> update). Text streams out as TokenEvents; stop strings are
// held back until they can no longer match, so no part of one is ever emitted.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/engine/collectives.h"
#include "runtime/engine/engine_config.h"
#include "runtime/engine/logprobs.h"
#include "runtime/engine/model_runner.h"
#include "runtime/engine/step_executor.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/tokenizer.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

struct TokenEvent {
  std::string request_id;
  int32_t index = 0;  // sample index (n > 1)
  std::string text_delta;  // newly visible text (valid UTF-8)
  // With SamplingParams::logprobs >= 0: the tokens sampled since this sample's last event.
  std::vector<TokenLogprob> logprobs;
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
};

// What the last Step() ran.
struct StepStats {
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;
  int32_t num_sampled = 0;
  bool pure_decode() const { return num_seqs > 0 && num_tokens == num_seqs && num_sampled == num_seqs; }
};

// Per-request latencies (seconds), measured on the leader from Add() on; what vLLM reports.
struct RequestMetrics {
  double queue_s = 0;    // arrival until first scheduled
  double ttft_s = 0;     // arrival until the first output token
  double tpot_s = 0;     // mean time per output token after the first
  double max_itl_s = 0;  // longest gap between two consecutive output tokens
  double e2e_s = 0;      // arrival until finished
};

struct RequestResult {
  std::string id;
  int32_t index = 0;  // which of the request's n samples
  std::vector<int32_t> output_ids;
  std::vector<TokenLogprob> logprobs;  // one per output token, with SamplingParams::logprobs >= 0
  std::string text;
  FinishReason reason = FinishReason::kNone;
  int32_t prompt_tokens = 0;
  RequestMetrics metrics;
};

class Engine {
 public:
  // `tokenizer` may be null (token-only use); then stop strings are rejected.
  // With `tp`, this is rank 0 of a tensor-parallel group: it schedules, sends every step to the
  // other ranks (each running a StepWorker) and samples; Shutdown() releases them.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(Backend& backend, const ModelWeights& weights,
                                                        const Tokenizer* tokenizer, EngineConfig config,
                                                        TensorParallel tp = {});
  // Tells the group's other ranks to stop (no-op at tp = 1). Idempotent.
  absl::Status Shutdown();

  // Extra end-of-sequence ids (e.g. the chat template's end-of-turn token).
  void AddStopTokenId(int32_t id) { eos_ids_.insert(id); }
  absl::Status Add(Request r);
  // Runs one step and reports what changed.
  absl::StatusOr<std::vector<TokenEvent>> Step();
  bool HasWork() const { return scheduler_->HasWork(); }
  bool Abort(const std::string& id);

  // Finished requests' results, removed as they are taken.
  std::vector<RequestResult> TakeResults();

  const KvCache& kv_cache() const { return executor_->cache(); }
  const KvCapacity& kv_capacity() const { return executor_->capacity(); }
  // The preemption costs measured at start-up (zero rates when there is no swap space).
  const PreemptionCostModel& preemption_costs() const { return scheduler_->config().preemption; }
  const StepStats& last_step() const { return last_step_; }
  const Scheduler& scheduler() const { return *scheduler_; }
  // Decode steps replayed from recorded graphs (0 on backends that cannot record).
  int64_t graph_replays() const { return executor_->runner().graph_replays(); }
  // Offloaded blocks staged for prefill attention so far (ModelRunner::staged_blocks).
  int64_t offload_staged_blocks() const { return executor_->runner().staged_blocks(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct SeqState {
    std::mt19937_64 rng;
    Clock::time_point arrival, first_scheduled, first_token, last_token;
    bool scheduled = false;
    int32_t tokens = 0;
    double max_itl = 0;
    std::string raw;        // decoded bytes of generated tokens (special tokens skipped)
    size_t emitted = 0;     // bytes of `raw` already streamed
    size_t max_stop = 0;    // longest stop string
    std::vector<TokenLogprob> logprobs;  // of the generated tokens (when asked)
    size_t logprobs_sent = 0;            // of those, already in an event
  };
  Engine() = default;
  // Per-sequence state key: the request id, plus the sample index for forks.
  static std::string StateKey(const Sequence& s) {
    return s.sample_index == 0 ? s.request.id : s.request.id + '\x1f' + std::to_string(s.sample_index);
  }
  // Updates state after `token` joined `seq`; returns the event, finishing it when due.
  TokenEvent Advance(Sequence& seq, SeqState& st, int32_t token, TokenLogprob* logprob);
  // Sends `input` to the group's other ranks (tensor parallel) and runs it here.
  absl::StatusOr<ModelRunner::Output> RunStep(const StepInput& input, bool greedy_only,
                                              std::span<const SampleRequest> samples = {}) {
    return executor_->Run(input, greedy_only, samples);
  }
  // Measures host<->device block copies and the prefill rate for the preemption cost model.
  absl::StatusOr<PreemptionCostModel> MeasurePreemptionCosts(Backend& backend);
  // Measures how fast offload blocks are read over the host link (bytes/s), for the log.
  absl::StatusOr<double> MeasureOffloadReads(Backend& backend);

  const ModelWeights* weights_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  EngineConfig config_;
  std::unique_ptr<StepExecutor> executor_;  // the KV cache and the runner; sends each step to the group
  std::unique_ptr<Scheduler> scheduler_;
  StepInput input_;
  absl::flat_hash_set<int32_t> eos_ids_;
  absl::flat_hash_map<std::string, SeqState> states_;
  absl::flat_hash_map<std::string, int32_t> live_ids_;  // request id -> its samples still running
  std::vector<RequestResult> results_;
  std::vector<std::pair<float, int32_t>> sample_scratch_;
  std::vector<SampleRequest> draws_;         // this step's draws, in sampling order
  std::vector<std::mt19937_64> fork_rngs_;   // generators of this step's new forks, after one draw
  StepStats last_step_;
};

}  // namespace kvs
