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
#include "runtime/engine/logprobs.h"
#include "runtime/engine/model_runner.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/tokenizer.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

struct EngineConfig {
  int32_t block_size = kDefaultBlockSize;
  int32_t max_seqs = kDefaultMaxSeqs;
  int32_t max_tokens_per_step = kDefaultMaxTokensPerStep;
  int32_t max_model_len = 0;     // 0: the model's own limit
  size_t kv_cache_bytes = 0;     // 0: memory_fraction of what is free after weights + workspace
  std::optional<KvDType> kv_dtype;  // KV cache element format; unset: the backend's default
  double memory_fraction = 0.9;
  size_t swap_space_bytes = 0;   // host memory for swapped-out KV blocks (per rank)
  size_t kv_offload_bytes = 0;   // host memory extending the cache for over-long sequences (per rank)
  PreemptionMode preemption_mode = PreemptionMode::kAuto;
  bool static_batching = false;  // the no-paging baseline (scheduler.h), for benchmarks
  bool prefix_caching = true;    // reuse cached KV of shared prompt prefixes
  bool enforce_eager = false;    // never replay decode steps as recorded (CUDA) graphs
  bool overlap_kv_moves = true;  // KV block moves beside the ops (RunnerLimits)
  absl::Status Validate() const;
};

// How much KV cache one rank of a group gets, measured at start-up.
struct KvCapacity {
  int32_t local_blocks = 0;  // what fits on this rank after its weights and step workspace
  int32_t blocks = 0;        // the group's: the minimum over its ranks (every rank holds each block)
  size_t bytes_per_block = 0;  // on this rank, for its KV heads
  int32_t offload_blocks = 0;  // the group's blocks in host memory past the device's (kv_offload_bytes)
};

// `config` with max_model_len resolved against the model and checked.
absl::StatusOr<EngineConfig> ResolveEngineConfig(EngineConfig config, const ModelConfig& model);
RunnerLimits LimitsFor(const EngineConfig& resolved);
// Measures this rank's KV capacity and agrees the group's with the other ranks (a collective
// call when tp.comm is set: every rank of the group must make it).
// The swap space in host blocks, agreed by the group (collective when tp.comm is set), and
// added to `cache` as its host tier.
absl::StatusOr<int32_t> AddSwapSpace(Backend& backend, const EngineConfig& resolved, const TensorParallel& tp,
                                     KvCache& cache);
absl::StatusOr<KvCapacity> PlanKvCapacity(Backend& backend, const ModelWeights& weights,
                                          const EngineConfig& resolved, const TensorParallel& tp);

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

  const KvCache& kv_cache() const { return cache_; }
  const KvCapacity& kv_capacity() const { return capacity_; }
  // The preemption costs measured at start-up (zero rates when there is no swap space).
  const PreemptionCostModel& preemption_costs() const { return scheduler_->config().preemption; }
  const StepStats& last_step() const { return last_step_; }
  const Scheduler& scheduler() const { return *scheduler_; }
  // Decode steps replayed from recorded graphs (0 on backends that cannot record).
  int64_t graph_replays() const { return runner_->graph_replays(); }
  // Offloaded blocks staged for prefill attention so far (ModelRunner::staged_blocks).
  int64_t offload_staged_blocks() const { return runner_->staged_blocks(); }

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
                                              std::span<const SampleRequest> samples = {});
  // Measures host<->device block copies and the prefill rate for the preemption cost model.
  absl::StatusOr<PreemptionCostModel> MeasurePreemptionCosts(Backend& backend);
  // Measures how fast offload blocks are read over the host link (bytes/s), for the log.
  absl::StatusOr<double> MeasureOffloadReads(Backend& backend);

  const ModelWeights* weights_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  EngineConfig config_;
  KvCache cache_;
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<Scheduler> scheduler_;
  StepInput input_;
  TensorParallel tp_;
  KvCapacity capacity_;
  std::vector<int32_t> step_words_;
  bool shut_down_ = false;
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
