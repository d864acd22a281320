#include "runtime/server/engine_service.h"

#include "absl/strings/str_format.h"

namespace kvs {

bool Stream::Next(std::vector<StreamEvent>& out, std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, wait, [&] { return !events_.empty() || unfinished_ == 0 || !error_.ok(); });
  while (!events_.empty()) {
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return unfinished_ > 0 && error_.ok();
}

absl::Status Stream::WaitAccepted() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return accepted_ || !error_.ok(); });
  return error_;
}

absl::Status Stream::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Stream::Accept(int32_t prompt_tokens) {
  prompt_tokens_ = prompt_tokens;
  std::lock_guard<std::mutex> lock(mu_);
  accepted_ = true;
  cv_.notify_all();
}

void Stream::Fail(absl::Status s) {
  std::lock_guard<std::mutex> lock(mu_);
  error_ = std::move(s);
  cv_.notify_all();
}

void Stream::Push(StreamEvent e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (e.reason != FinishReason::kNone) --unfinished_;
  events_.push_back(std::move(e));
  cv_.notify_all();
}

void EngineService::Histogram::Add(double v) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (v <= bounds[i]) ++counts[i];
  }
  sum += v;
  ++n;
}

EngineService::EngineService(Engine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat, ServiceLimits limits)
    : engine_(engine), tokenizer_(tokenizer), chat_(chat), limits_(limits) {
  for (Histogram* h : {&ttft_, &tpot_, &e2e_}) {
    h->bounds = h == &tpot_ ? std::vector<double>{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0}
                            : std::vector<double>{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    h->counts.assign(h->bounds.size(), 0);
  }
}

absl::StatusOr<std::shared_ptr<Stream>> EngineService::Submit(ApiRequest r, std::string id) {
  if (draining_) return absl::UnavailableError("the server is shutting down");
  if (in_flight_.fetch_add(1) >= limits_.max_in_flight) {
    --in_flight_;
    return absl::ResourceExhaustedError(
        absl::StrFormat("the server is at its limit of %d requests in flight; retry shortly", limits_.max_in_flight));
  }
  auto stream = std::make_shared<Stream>(r.params.n);
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(Pending{std::move(r), std::move(id), stream});
  }
  cv_.notify_all();
  return stream;
}

void EngineService::Cancel(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(id);
  }
  cv_.notify_all();
}

void EngineService::Drain() {
  draining_ = true;
  cv_.notify_all();
}

void EngineService::Admit(Pending& p) {
  auto fail = [&](absl::Status s) {
    p.stream->Fail(std::move(s));
    --in_flight_;
    ++requests_failed_;
  };
  absl::StatusOr<std::vector<int32_t>> ids;
  if (p.request.chat) {
    if (chat_ == nullptr) return fail(absl::InvalidArgumentError("this model has no chat template: use /v1/completions"));
    auto text = chat_->Render(p.request.messages, /*add_generation_prompt=*/true);
    if (!text.ok()) return fail(absl::InvalidArgumentError(text.status().message()));
    ids = tokenizer_.Encode(*text, /*add_special_tokens=*/false);
  } else if (!p.request.prompt_ids.empty()) {
    ids = p.request.prompt_ids;
  } else {
    ids = tokenizer_.Encode(p.request.prompt, /*add_special_tokens=*/true);
  }
  if (!ids.ok()) return fail(absl::InvalidArgumentError(ids.status().message()));
  if (ids->empty()) return fail(absl::InvalidArgumentError("the prompt is empty"));
  const int64_t total = static_cast<int64_t>(ids->size()) + p.request.params.max_tokens;
  if (total > limits_.max_model_len) {
    return fail(absl::InvalidArgumentError(absl::StrFormat(
        "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the prompt, %d "
        "for the completion). Please reduce the prompt or max_tokens.",
        limits_.max_model_len, total, ids->size(), p.request.params.max_tokens)));
  }
  const auto n_prompt = static_cast<int32_t>(ids->size());
  absl::Status s = engine_.Add(Request{p.id, *std::move(ids), p.request.params});
  if (!s.ok()) return fail(absl::InvalidArgumentError(s.message()));
  live_[p.id] = p.stream;
  remaining_[p.id] = p.request.params.n;
  prompt_tokens_ += n_prompt;
  p.stream->Accept(n_prompt);
}

void EngineService::Observe(const std::vector<RequestResult>& results) {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  for (const RequestResult& r : results) {
    ttft_.Add(r.metrics.ttft_s);
    if (r.output_ids.size() > 1) tpot_.Add(r.metrics.tpot_s);
    e2e_.Add(r.metrics.e2e_s);
    generated_tokens_ += static_cast<int64_t>(r.output_ids.size());
    if (auto it = live_.find(r.id); it != live_.end()) it->second->AddOutputTokens(static_cast<int32_t>(r.output_ids.size()));
  }
}

absl::Status EngineService::Run() {
  for (;;) {
    std::deque<Pending> admit;
    std::vector<std::string> cancel;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (pending_.empty() && cancelled_.empty() && !engine_.HasWork()) {
        if (draining_ && live_.empty()) return absl::OkStatus();
        cv_.wait_for(lock, std::chrono::milliseconds(50));
      }
      admit.swap(pending_);
      cancel.swap(cancelled_);
    }
    for (Pending& p : admit) Admit(p);
    for (const std::string& id : cancel) {
      auto it = live_.find(id);
      if (it == live_.end()) continue;
      engine_.Abort(id);
      it->second->Fail(absl::CancelledError("the client went away"));
      live_.erase(it);
      remaining_.erase(id);
      --in_flight_;
      ++requests_failed_;
    }
    if (engine_.HasWork()) {
      absl::StatusOr<std::vector<TokenEvent>> events = engine_.Step();
      if (!events.ok()) return events.status();
      Observe(engine_.TakeResults());
      for (TokenEvent& ev : *events) {
        auto it = live_.find(ev.request_id);
        if (it == live_.end()) continue;
        StreamEvent se{ev.index, std::move(ev.text_delta), ev.finished ? ev.reason : FinishReason::kNone, {}};
        for (const TokenLogprob& lp : ev.logprobs) {
          ApiLogprob a{tokenizer_.DecodeBytes({lp.token}, /*skip_special=*/false), lp.logprob, {}};
          for (const auto& [id, v] : lp.top) a.top.emplace_back(tokenizer_.DecodeBytes({id}, false), v);
          se.logprobs.push_back(std::move(a));
        }
        it->second->Push(std::move(se));
        // A request leaves once every one of its samples has finished.
        if (ev.finished && --remaining_[ev.request_id] == 0) {
          remaining_.erase(ev.request_id);
          live_.erase(it);
          --in_flight_;
          ++requests_ok_;
        }
      }
    }
    const Scheduler& s = engine_.scheduler();
    running_ = s.num_running();
    waiting_ = s.num_waiting();
    swapped_ = s.num_swapped();
    kv_total_ = s.pool().num_blocks();
    kv_used_ = s.pool().num_blocks() - s.pool().num_free();
    kv_tokens_ = s.TokensInCache();
    preemptions_ = s.num_preemptions();
    prefix_hits_ = s.prefix_hit_tokens();
    prefix_host_hits_ = s.host_prefix_hit_tokens();
    prefix_queries_ = s.prefix_query_tokens();
  }
}

std::string EngineService::MetricsText() const {
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v, const char* type = "gauge") {
    absl::StrAppendFormat(&out, "# HELP kvshard_%s %s\n# TYPE kvshard_%s %s\nkvshard_%s %.17g\n", name, help, name, type,
                          name, v);
  };
  gauge("requests_running", "Sequences in the running batch", running_);
  gauge("requests_waiting", "Sequences waiting for admission", waiting_);
  gauge("requests_swapped", "Sequences swapped out to host memory", swapped_);
  gauge("kv_cache_usage_ratio", "Share of this group's KV blocks in use (every device holds the same blocks)",
        kv_total_ > 0 ? static_cast<double>(kv_used_) / kv_total_ : 0.0);
  gauge("kv_cache_blocks_total", "KV blocks of this group", kv_total_);
  gauge("kv_slot_utilization_ratio", "Tokens stored over token slots of the blocks in use (paging waste)",
        kv_used_ > 0 ? static_cast<double>(kv_tokens_) / (static_cast<double>(kv_used_) * engine_.kv_cache().block_size())
                     : 0.0);
  gauge("prefix_cache_hit_ratio", "Prompt tokens found in the prefix cache over prompt tokens looked up",
        prefix_queries_ > 0 ? static_cast<double>(prefix_hits_) / prefix_queries_ : 0.0);
  gauge("prefix_cache_host_hit_tokens_total", "Prompt tokens whose cached KV came back from the host tier",
        prefix_host_hits_, "counter");
  gauge("preemptions_total", "Sequences preempted (swap or recompute)", preemptions_, "counter");
  gauge("requests_success_total", "Requests finished", requests_ok_, "counter");
  gauge("requests_failed_total", "Requests rejected after acceptance or aborted", requests_failed_, "counter");
  gauge("prompt_tokens_total", "Prompt tokens admitted", prompt_tokens_, "counter");
  gauge("generation_tokens_total", "Tokens generated", generated_tokens_, "counter");
  const double up = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  gauge("generation_tokens_per_second", "Tokens generated per second since start", generated_tokens_ / std::max(up, 1e-9));
  std::lock_guard<std::mutex> lock(metrics_mu_);
  for (auto [name, h] : {std::pair{"time_to_first_token_seconds", &ttft_}, std::pair{"time_per_output_token_seconds", &tpot_},
                         std::pair{"e2e_request_latency_seconds", &e2e_}}) {
    absl::StrAppendFormat(&out, "# HELP kvshard_%s Request latency\n# TYPE kvshard_%s histogram\n", name, name);
    for (size_t i = 0; i < h->bounds.size(); ++i) {
      absl::StrAppendFormat(&out, "kvshard_%s_bucket{le=\"%g\"} %d\n", name, h->bounds[i], h->counts[i]);
    }
    absl::StrAppendFormat(&out, "kvshard_%s_bucket{le=\"+Inf\"} %d\nkvshard_%s_sum %.9g\nkvshard_%s_count %d\n", name, h->n,
                          name, h->sum, name, h->n);
  }
  return out;
}

}  // namespace kvs
