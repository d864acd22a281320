// The bridge between HTTP connections and the engines. The HTTP layer Submits parsed requests
// and reads their outputs from a Stream, which calls its listener (from any thread) whenever
// something new is there, so no connection holds a thread while it waits. Prompts are rendered
// and tokenized on a small pool of preparer threads, never on the engine thread: a hostile
// prompt delays only itself. The engine thread (the process's main thread, which alone calls
// MPI) runs Run(): it sends each prepared request to a serving group (serving_group.h: this
// process's engine, or with data parallelism another group chosen by the router), advances the
// groups, and hands each request's text deltas to its Stream. A cancelled request (client gone)
// is aborted and its blocks freed at the next step. Drain: no new requests; the in-flight ones
// finish, or at the drain deadline fail with Unavailable (the HTTP layer answers 503), so
// every accepted request gets an answer. Counters and latency histograms feed /metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <functional>
#include <string>
#include <thread>
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

// One request's outputs, written by the engine thread, read by its HTTP connection.
class Stream {
 public:
  Stream(std::string id, int32_t n) : id_(std::move(id)), unfinished_(n) {}
  const std::string& id() const { return id_; }
  // Appends the events so far to `out` without waiting. Returns false once the request is over
  // and everything was read (check error() then).
  bool Poll(std::vector<StreamEvent>& out);
  bool accepted() const;
  absl::Status error() const;
  int32_t prompt_tokens() const { return prompt_tokens_; }
  int32_t output_tokens() const { return output_tokens_; }
  // Called after every Accept, Fail and Push, on the thread that made it, outside the lock;
  // it must not block (the HTTP layer posts to the connection's own executor). Set it once,
  // then look at the stream: what happened before it was set does not call it.
  void SetListener(std::function<void()> f);
  bool cancelled() const { return cancelled_; }

  // Preparer and engine threads.
  void Accept(int32_t prompt_tokens);
  void Fail(absl::Status s);
  void Push(StreamEvent e);
  void AddOutputTokens(int32_t n) { output_tokens_ += n; }
  void MarkCancelled() { cancelled_ = true; }

 private:
  void Notify();
  const std::string id_;
  mutable std::mutex mu_;
  std::deque<StreamEvent> events_;
  int32_t unfinished_;
  bool accepted_ = false;
  absl::Status error_;
  std::function<void()> listener_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int32_t> prompt_tokens_{0}, output_tokens_{0};
};

struct ServiceLimits {
  int32_t max_model_len = 0;      // prompt + max_tokens must fit
  int32_t max_in_flight = 1024;   // beyond: 503
  int32_t preparer_threads = 2;   // render + tokenize
  // Longest text a prompt or chat conversation may have before tokenization: a token is at least
  // one byte, so text past a multiple of the context is refused without tokenizing it.
  int64_t max_prompt_bytes_per_token = 64;
  std::chrono::milliseconds drain_timeout{30000};  // after Drain, in-flight requests get this long
};

class EngineService {
 public:
  // One group: this process's engine.
  EngineService(Engine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat, ServiceLimits limits);
  // Several groups (groups[0] is this process's); `router` picks one per request.
  EngineService(std::vector<ServingGroup*> groups, RequestRouter* router, const Tokenizer& tokenizer,
                const ChatTemplate* chat, ServiceLimits limits);

  ~EngineService();

  // HTTP threads. ResourceExhausted (503) when too many requests are in flight, Unavailable (503)
  // while draining. The stream reports acceptance (prompt tokenized and admitted) or the error.
  absl::StatusOr<std::shared_ptr<Stream>> Submit(ApiRequest r, std::string id);
  // The client went away: the request is aborted wherever it is (preparing, queued, running).
  void Cancel(Stream& stream);
  std::string MetricsText() const;  // Prometheus exposition format
  // From the signal on, not from the engine thread's next turn (a CPU step can take seconds: a
  // probe in between must not hear "ok").
  bool draining() const { return draining_ || drain_requested_; }
  // Called once on the engine thread when draining begins (the HTTP layer stops accepting).
  void SetOnDrain(std::function<void()> f) { on_drain_ = std::move(f); }

  // Engine thread: serves until Drain() was called and nothing is left in flight (or the drain
  // deadline passed and what was left was failed).
  absl::Status Run();
  // Stops taking requests; Run returns once the in-flight ones are done. Only sets an atomic
  // flag, so a signal handler may call it.
  void Drain() { drain_requested_ = true; }

 private:
  struct Pending {  // prepared: tokenized and checked, ready for a group
    Request request;
    std::shared_ptr<Stream> stream;
  };
  struct Preparing {
    ApiRequest request;
    std::shared_ptr<Stream> stream;
  };
  struct Live {
    std::shared_ptr<Stream> stream;
    int group = 0;
    int32_t remaining = 0;  // samples not yet finished
  };
  void PrepareLoop();
  absl::StatusOr<std::vector<int32_t>> Tokenize(const ApiRequest& r) const;
  void Fail(Stream& stream, absl::Status s);
  void Admit(Pending& p);
  void Observe(const std::vector<RequestResult>& results);
  void Deliver(int group, GroupOutput& out);
  // The request leaves: its group and the router hear of it.
  void Retire(absl::flat_hash_map<std::string, Live>::iterator it, bool ok);
  // Drain deadline: every request still in flight fails with Unavailable.
  void FailEverything();
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
  std::atomic<bool> drain_requested_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int32_t> in_flight_{0};
  std::function<void()> on_drain_;

  std::mutex prepare_mu_;
  std::condition_variable prepare_cv_;
  std::deque<Preparing> preparing_;
  bool stop_preparers_ = false;
  bool closed_ = false;  // past the drain deadline: prepared requests fail instead of queueing
  std::atomic<int32_t> being_prepared_{0};  // taken from preparing_, not yet in pending_
  std::vector<std::thread> preparers_;
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
