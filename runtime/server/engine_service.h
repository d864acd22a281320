// The bridge between HTTP threads and the engines. HTTP handlers Submit parsed requests and read
// their outputs from a Stream; the engine thread (the process's main thread, which alone calls
// MPI) runs Run(): it tokenizes new requests, sends each to a serving group (serving_group.h: this
// process's engine, or with data parallelism another group chosen by the router), advances the
// groups, and hands each request's text deltas to its Stream. A cancelled request (client gone)
// is aborted and its blocks freed at the next step. Counters and latency histograms feed /metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/model/chat_template.h"
#include "runtime/model/tokenizer.h"
#include "runtime/server/openai_protocol.h"
#include "runtime/server/serving_group.h"

namespace kvs {

struct StreamEvent {
  int32_t index = 0;
  std::string delta;
  FinishReason reason = FinishReason::kNone;
  std::vector<ApiLogprob> logprobs;  // of the tokens behind `delta`, when the request asked
};

// One request's outputs, written by the engine thread, read by its HTTP handler.
class Stream {
 public:
  explicit Stream(int32_t n) : unfinished_(n) {}
  // Waits up to `wait` for events; appends them to `out`. Returns false once the request is over
  // and everything was read (check error() then).
  bool Next(std::vector<StreamEvent>& out, std::chrono::milliseconds wait);
  // Whether the request was accepted (tokenized and admitted) or failed; waits.
  absl::Status WaitAccepted();
  absl::Status error() const;
  int32_t prompt_tokens() const { return prompt_tokens_; }
  int32_t output_tokens() const { return output_tokens_; }

  // Engine thread.
  void Accept(int32_t prompt_tokens);
  void Fail(absl::Status s);
  void Push(StreamEvent e);
  void AddOutputTokens(int32_t n) { output_tokens_ += n; }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  int32_t unfinished_;
  bool accepted_ = false;
  absl::Status error_;
  std::atomic<int32_t> prompt_tokens_{0}, output_tokens_{0};
};

struct ServiceLimits {
  int32_t max_model_len = 0;      // prompt + max_tokens must fit
  int32_t max_in_flight = 1024;   // beyond: 503
};

class EngineService {
 public:
  // One group: this process's engine.
  EngineService(Engine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat, ServiceLimits limits);
  // Several groups (groups[0] is this process's); `router` picks one per request.
  EngineService(std::vector<ServingGroup*> groups, RequestRouter* router, const Tokenizer& tokenizer,
                const ChatTemplate* chat, ServiceLimits limits);

  // HTTP threads. ResourceExhausted (503) when too many requests are in flight or draining.
  absl::StatusOr<std::shared_ptr<Stream>> Submit(ApiRequest r, std::string id);
  void Cancel(const std::string& id);
  std::string MetricsText() const;  // Prometheus exposition format

  // Engine thread: serves until Drain() was called and nothing is left in flight.
  absl::Status Run();
  // Stops taking requests; Run returns once the in-flight ones are done.
  void Drain();

 private:
  struct Pending {
    ApiRequest request;
    std::string id;
    std::shared_ptr<Stream> stream;
  };
  struct Live {
    std::shared_ptr<Stream> stream;
    int group = 0;
    int32_t remaining = 0;  // samples not yet finished
  };
  void Admit(Pending& p);
  void Observe(const std::vector<RequestResult>& results);
  void Deliver(int group, GroupOutput& out);
  // The request leaves: its group and the router hear of it.
  void Retire(absl::flat_hash_map<std::string, Live>::iterator it, bool ok);
  void UpdateStats();

  std::unique_ptr<LocalGroup> own_group_;  // the one-engine constructor's
  std::vector<ServingGroup*> groups_;
  RequestRouter* router_ = nullptr;
  const Tokenizer& tokenizer_;
  const ChatTemplate* chat_;
  ServiceLimits limits_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  std::vector<std::string> cancelled_;
  std::atomic<bool> draining_{false};
  std::atomic<int32_t> in_flight_{0};
  absl::flat_hash_map<std::string, Live> live_;  // engine thread only

  // Metrics (engine thread writes, HTTP threads read).
  mutable std::mutex metrics_mu_;
  struct Histogram {
    std::vector<double> bounds;
    std::vector<int64_t> counts;  // cumulative at render time
    double sum = 0;
    int64_t n = 0;
    void Add(double v);
  };
  Histogram ttft_, tpot_, e2e_;
  std::atomic<int64_t> requests_ok_{0}, requests_failed_{0}, prompt_tokens_{0}, generated_tokens_{0};
  std::vector<GroupStats> group_stats_;        // under metrics_mu_
  std::vector<int64_t> group_requests_;        // requests sent to each group, under metrics_mu_
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace kvs
