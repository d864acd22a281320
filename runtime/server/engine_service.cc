#include "runtime/server/engine_service.h"

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

bool Stream::Poll(std::vector<StreamEvent>& out) {
  std::lock_guard<std::mutex> lock(mu_);
  while (!events_.empty()) {
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return unfinished_ > 0 && error_.ok();
}

bool Stream::accepted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return accepted_;
}

absl::Status Stream::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Stream::SetListener(std::function<void()> f) {
  std::lock_guard<std::mutex> lock(mu_);
  listener_ = std::move(f);
}

void Stream::Notify() {
  std::function<void()> f;
  {
    std::lock_guard<std::mutex> lock(mu_);
    f = listener_;
  }
  if (f) f();
}

void Stream::Accept(int32_t prompt_tokens) {
  prompt_tokens_ = prompt_tokens;
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepted_ = true;
  }
  Notify();
}

void Stream::Fail(absl::Status s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = std::move(s);
  }
  Notify();
}

void Stream::Push(StreamEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e.reason != FinishReason::kNone) --unfinished_;
    events_.push_back(std::move(e));
  }
  Notify();
}

void EngineService::Histogram::Add(double v) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (v <= bounds[i]) ++counts[i];
  }
  sum += v;
  ++n;
}

EngineService::EngineService(Engine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat, ServiceLimits limits)
    : EngineService(std::vector<ServingGroup*>{}, nullptr, tokenizer, chat, limits) {
  own_group_ = std::make_unique<LocalGroup>(engine);
  groups_ = {own_group_.get()};
  group_stats_.assign(1, GroupStats{});
  group_requests_.assign(1, 0);
}

EngineService::EngineService(std::vector<ServingGroup*> groups, RequestRouter* router, const Tokenizer& tokenizer,
                             const ChatTemplate* chat, ServiceLimits limits)
    : groups_(std::move(groups)), router_(router), tokenizer_(tokenizer), chat_(chat), limits_(limits) {
  group_stats_.assign(groups_.size(), GroupStats{});
  group_requests_.assign(groups_.size(), 0);
  for (Histogram* h : {&ttft_, &tpot_, &e2e_}) {
    h->bounds = h == &tpot_ ? std::vector<double>{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0}
                            : std::vector<double>{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    h->counts.assign(h->bounds.size(), 0);
  }
  for (int i = 0; i < std::max(1, limits_.preparer_threads); ++i) preparers_.emplace_back([this] { PrepareLoop(); });
}

EngineService::~EngineService() {
  {
    std::lock_guard<std::mutex> lock(prepare_mu_);
    stop_preparers_ = true;
  }
  prepare_cv_.notify_all();
  for (std::thread& t : preparers_) t.join();
}

absl::StatusOr<std::shared_ptr<Stream>> EngineService::Submit(ApiRequest r, std::string id) {
  if (draining_ || drain_requested_) return absl::UnavailableError("the server is shutting down");
  if (in_flight_.fetch_add(1) >= limits_.max_in_flight) {
    --in_flight_;
    return absl::ResourceExhaustedError(
        absl::StrFormat("the server is at its limit of %d requests in flight; retry shortly", limits_.max_in_flight));
  }
  auto stream = std::make_shared<Stream>(std::move(id), r.params.n);
  {
    std::lock_guard<std::mutex> lock(prepare_mu_);
    preparing_.push_back(Preparing{std::move(r), stream});
  }
  prepare_cv_.notify_one();
  return stream;
}

void EngineService::Cancel(Stream& stream) {
  stream.MarkCancelled();  // seen by the preparers and by Admit
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(stream.id());
  }
  cv_.notify_all();
}

void EngineService::Fail(Stream& stream, absl::Status s) {
  stream.Fail(std::move(s));
  --in_flight_;
  ++requests_failed_;
}

absl::StatusOr<std::vector<int32_t>> EngineService::Tokenize(const ApiRequest& r) const {
  // A token is at least one byte of text, and in practice about four: text far past the context
  // cannot fit, and is refused before any work on it.
  const int64_t max_bytes = static_cast<int64_t>(limits_.max_model_len) * limits_.max_prompt_bytes_per_token;
  auto too_long = [&](int64_t bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the prompt is %d bytes, which cannot fit this model's maximum context length of %d tokens", bytes,
        limits_.max_model_len));
  };
  if (r.chat) {
    if (chat_ == nullptr) return absl::InvalidArgumentError("this model has no chat template: use /v1/completions");
    int64_t bytes = 0;
    for (const ChatMessage& m : r.messages) bytes += static_cast<int64_t>(m.content.size() + m.role.size());
    if (bytes > max_bytes) return too_long(bytes);
    auto text = chat_->Render(r.messages, /*add_generation_prompt=*/true);
    if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
    return tokenizer_.Encode(*text, /*add_special_tokens=*/false);
  }
  if (!r.prompt_ids.empty()) return r.prompt_ids;
  if (static_cast<int64_t>(r.prompt.size()) > max_bytes) return too_long(static_cast<int64_t>(r.prompt.size()));
  return tokenizer_.Encode(r.prompt, /*add_special_tokens=*/true);
}

void EngineService::PrepareLoop() {
  for (;;) {
    Preparing job;
    {
      std::unique_lock<std::mutex> lock(prepare_mu_);
      prepare_cv_.wait(lock, [&] { return stop_preparers_ || !preparing_.empty(); });
      if (preparing_.empty()) return;
      job = std::move(preparing_.front());
      preparing_.pop_front();
      ++being_prepared_;
    }
    auto done = [&](std::optional<Pending> p) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (p && closed_) {
          p.reset();
          Fail(*job.stream, absl::UnavailableError("the server shut down before this request started"));
        }
        if (p) pending_.push_back(*std::move(p));
        --being_prepared_;
      }
      cv_.notify_all();
    };
    if (job.stream->cancelled()) {
      Fail(*job.stream, absl::CancelledError("the client went away"));
      done(std::nullopt);
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> ids = Tokenize(job.request);
    absl::Status bad;
    if (!ids.ok()) {
      bad = absl::InvalidArgumentError(ids.status().message());
    } else if (ids->empty()) {
      bad = absl::InvalidArgumentError("the prompt is empty");
    } else if (const int64_t total = static_cast<int64_t>(ids->size()) + job.request.params.max_tokens;
               total > limits_.max_model_len) {
      bad = absl::InvalidArgumentError(absl::StrFormat(
          "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the prompt, %d "
          "for the completion). Please reduce the prompt or max_tokens.",
          limits_.max_model_len, total, ids->size(), job.request.params.max_tokens));
    }
    if (!bad.ok()) {
      Fail(*job.stream, std::move(bad));
      done(std::nullopt);
      continue;
    }
    done(Pending{Request{job.stream->id(), *std::move(ids), job.request.params}, job.stream});
  }
}

void EngineService::Admit(Pending& p) {
  if (p.stream->cancelled()) return Fail(*p.stream, absl::CancelledError("the client went away"));
  const auto n_prompt = static_cast<int32_t>(p.request.prompt_ids.size());
  const int32_t n = p.request.params.n;
  const std::string id = p.request.id;
  const int group = router_ != nullptr ? router_->Route(p.request) : 0;
  absl::Status s = groups_[group]->Add(std::move(p.request));
  if (!s.ok()) {
    if (router_ != nullptr) router_->Done(group, id);
    return Fail(*p.stream, absl::InvalidArgumentError(s.message()));
  }
  live_[id] = Live{p.stream, group, n};
  {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    ++group_requests_[group];
  }
  prompt_tokens_ += n_prompt;
  p.stream->Accept(n_prompt);
}

void EngineService::Retire(absl::flat_hash_map<std::string, Live>::iterator it, bool ok) {
  if (router_ != nullptr) router_->Done(it->second.group, it->first);
  live_.erase(it);
  --in_flight_;
  ++(ok ? requests_ok_ : requests_failed_);
}

void EngineService::Deliver(int group, GroupOutput& out) {
  Observe(out.results);
  for (auto& [id, status] : out.refused) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    it->second.stream->Fail(absl::InvalidArgumentError(status.message()));
    Retire(it, false);
  }
  for (TokenEvent& ev : out.events) {
    auto it = live_.find(ev.request_id);
    if (it == live_.end()) continue;
    StreamEvent se{ev.index, std::move(ev.text_delta), ev.finished ? ev.reason : FinishReason::kNone, {}};
    for (const TokenLogprob& lp : ev.logprobs) {
      ApiLogprob a{tokenizer_.DecodeBytes({lp.token}, /*skip_special=*/false), lp.logprob, {}};
      for (const auto& [id, v] : lp.top) a.top.emplace_back(tokenizer_.DecodeBytes({id}, false), v);
      se.logprobs.push_back(std::move(a));
    }
    it->second.stream->Push(std::move(se));
    // A request leaves once every one of its samples has finished.
    if (ev.finished && --it->second.remaining == 0) Retire(it, true);
  }
}

void EngineService::UpdateStats() {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  for (size_t g = 0; g < groups_.size(); ++g) group_stats_[g] = groups_[g]->Stats();
}

void EngineService::Observe(const std::vector<RequestResult>& results) {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  for (const RequestResult& r : results) {
    ttft_.Add(r.metrics.ttft_s);
    if (r.output_ids.size() > 1) tpot_.Add(r.metrics.tpot_s);
    e2e_.Add(r.metrics.e2e_s);
    generated_tokens_ += static_cast<int64_t>(r.output_ids.size());
    if (auto it = live_.find(r.id); it != live_.end()) {
      it->second.stream->AddOutputTokens(static_cast<int32_t>(r.output_ids.size()));
    }
  }
}

void EngineService::FailEverything() {
  const absl::Status gone = absl::UnavailableError("the server shut down (drain timeout) before this request finished");
  std::deque<Preparing> preparing;
  {
    std::lock_guard<std::mutex> lock(prepare_mu_);
    preparing.swap(preparing_);
  }
  for (Preparing& p : preparing) Fail(*p.stream, gone);
  std::deque<Pending> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    pending.swap(pending_);
  }
  for (Pending& p : pending) Fail(*p.stream, gone);
  while (!live_.empty()) {
    auto it = live_.begin();
    groups_[it->second.group]->Abort(it->first);
    it->second.stream->Fail(gone);
    Retire(it, false);
  }
}

absl::Status EngineService::Run() {
  std::chrono::steady_clock::time_point deadline{};
  for (;;) {
    if (drain_requested_ && !draining_) {
      draining_ = true;
      deadline = std::chrono::steady_clock::now() + limits_.drain_timeout;
      if (on_drain_) on_drain_();
    }
    if (draining_ && std::chrono::steady_clock::now() >= deadline) FailEverything();
    bool local_busy = false, remote_busy = false;
    for (size_t g = 0; g < groups_.size(); ++g) (g == 0 ? local_busy : remote_busy) |= groups_[g]->Busy();
    std::deque<Pending> admit;
    std::vector<std::string> cancel;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (pending_.empty() && cancelled_.empty() && !local_busy) {
        if (draining_ && live_.empty() && in_flight_ == 0) return absl::OkStatus();
        // Remote groups report over MPI, which only this thread may poll: look again soon.
        cv_.wait_for(lock, std::chrono::milliseconds(remote_busy || draining_ ? 1 : 50));
      }
      admit.swap(pending_);
      cancel.swap(cancelled_);
    }
    for (Pending& p : admit) Admit(p);
    for (const std::string& id : cancel) {
      auto it = live_.find(id);
      if (it == live_.end()) continue;  // not admitted yet: the preparers or Admit drop it
      groups_[it->second.group]->Abort(id);
      it->second.stream->Fail(absl::CancelledError("the client went away"));
      Retire(it, false);
    }
    std::vector<std::pair<int, GroupOutput>> outputs;
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (!groups_[g]->Busy()) continue;
      GroupOutput out;
      KVS_RETURN_IF_ERROR(groups_[g]->Advance(out));
      outputs.emplace_back(static_cast<int>(g), std::move(out));
    }
    // The metrics first, then the clients: a client that has seen a token (and reads /metrics, or
    // hangs up) must find its request counted. Delivered first, a remote group's request could
    // show as not yet running and then, one loop later, as running.
    UpdateStats();
    for (auto& [g, out] : outputs) Deliver(g, out);
  }
}

std::string EngineService::MetricsText() const {
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v, const char* type = "gauge") {
    absl::StrAppendFormat(&out, "# HELP kvshard_%s %s\n# TYPE kvshard_%s %s\nkvshard_%s %.17g\n", name, help, name, type,
                          name, v);
  };
  std::vector<GroupStats> groups;
  std::vector<int64_t> routed;
  {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    groups = group_stats_;
    routed = group_requests_;
  }
  GroupStats all;  // every group together
  double slots_used = 0;
  for (const GroupStats& g : groups) {
    all.running += g.running;
    all.waiting += g.waiting;
    all.swapped += g.swapped;
    all.kv_used += g.kv_used;
    all.kv_total += g.kv_total;
    all.kv_tokens += g.kv_tokens;
    all.offload_used += g.offload_used;
    all.offload_staged += g.offload_staged;
    all.preemptions += g.preemptions;
    all.prefix_hits += g.prefix_hits;
    all.prefix_host_hits += g.prefix_host_hits;
    all.prefix_queries += g.prefix_queries;
    slots_used += static_cast<double>(g.kv_used) * g.block_size;
  }
  gauge("requests_running", "Sequences in the running batch", all.running);
  gauge("requests_waiting", "Sequences waiting for admission", all.waiting);
  gauge("requests_swapped", "Sequences swapped out to host memory", all.swapped);
  gauge("kv_cache_usage_ratio", "Share of the KV blocks in use, over every group (each device of a group holds its blocks)",
        all.kv_total > 0 ? static_cast<double>(all.kv_used) / all.kv_total : 0.0);
  gauge("kv_cache_blocks_total", "KV blocks of every group", all.kv_total);
  gauge("kv_offload_blocks_used", "KV blocks of long sequences held in the offload tier (host memory read in place)",
        all.offload_used);
  gauge("kv_offload_staged_blocks_total",
        "Offload blocks copied to the device staging window before a prefill step's attention (one per block and step)",
        all.offload_staged, "counter");
  gauge("kv_slot_utilization_ratio", "Tokens stored over token slots of the blocks in use (paging waste)",
        slots_used > 0 ? static_cast<double>(all.kv_tokens) / slots_used : 0.0);
  gauge("prefix_cache_hit_ratio", "Prompt tokens found in the prefix cache over prompt tokens looked up",
        all.prefix_queries > 0 ? static_cast<double>(all.prefix_hits) / all.prefix_queries : 0.0);
  gauge("prefix_cache_host_hit_tokens_total", "Prompt tokens whose cached KV came back from the host tier",
        all.prefix_host_hits, "counter");
  gauge("preemptions_total", "Sequences preempted (swap or recompute)", all.preemptions, "counter");
  // Per tensor-parallel group (data parallelism): where the router sent requests, and each
  // group's KV use (every device of a group holds the same blocks, one per device slice).
  auto per_group = [&](const char* name, const char* help, const char* type, auto value) {
    absl::StrAppendFormat(&out, "# HELP kvshard_%s %s\n# TYPE kvshard_%s %s\n", name, help, name, type);
    for (size_t g = 0; g < groups.size(); ++g) {
      absl::StrAppendFormat(&out, "kvshard_%s{group=\"%d\"} %.17g\n", name, g, static_cast<double>(value(g)));
    }
  };
  per_group("group_kv_cache_usage_ratio", "Share of the group's KV blocks in use, on each of its devices", "gauge",
            [&](size_t g) { return groups[g].kv_total > 0 ? static_cast<double>(groups[g].kv_used) / groups[g].kv_total : 0.0; });
  per_group("group_kv_cache_blocks_total", "KV blocks of the group (on each of its devices)", "gauge",
            [&](size_t g) { return groups[g].kv_total; });
  per_group("group_requests_running", "Sequences in the group's running batch", "gauge",
            [&](size_t g) { return groups[g].running; });
  per_group("group_requests_routed_total", "Requests the router sent to the group", "counter",
            [&](size_t g) { return routed[g]; });
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
