#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "kernels/common/sampling.h"

namespace kvs {
namespace {

// A request generator's draw as the float both samplers take, kept below 1.
float UniformDraw(double u) { return std::min(static_cast<float>(u), std::nextafter(1.0f, 0.0f)); }

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(Backend& backend, const ModelWeights& weights,
                                                       const Tokenizer* tokenizer, EngineConfig config,
                                                       TensorParallel tp) {
  const ModelConfig& mc = weights.config();
  KVS_ASSIGN_OR_RETURN(config, ResolveEngineConfig(config, mc));
  std::unique_ptr<Engine> e(new Engine());
  e->weights_ = &weights;
  e->tokenizer_ = tokenizer;
  e->config_ = config;
  for (int32_t id : mc.eos_token_ids) e->eos_ids_.insert(id);
  if (tokenizer != nullptr && tokenizer->eos_id() >= 0) e->eos_ids_.insert(tokenizer->eos_id());

  KVS_ASSIGN_OR_RETURN(e->executor_, StepExecutor::Create(backend, weights, config, tp));
  KvCache& cache = e->executor_->cache();
  const KvCapacity& capacity = e->executor_->capacity();
  SchedulerConfig sc = config.scheduler;  // what was asked, and below what was measured
  sc.bytes_per_block = capacity.bytes_per_block;
  sc.kv_dtype_name = std::string(KvDTypeName(cache.dtype()));
  sc.tp = tp.size();
  sc.kv_groups = cache.groups();
  sc.residual_seqs = cache.num_residual_seqs();
  sc.residual_blocks = cache.ring().blocks;
  sc.residual_sink = cache.ring().sink;
  // Hashes of one model's blocks mean nothing to another's.
  sc.cache_salt = std::hash<std::string>{}(absl::StrFormat("%s/%d/%d/%d/%d", mc.name, mc.num_layers, mc.hidden_size,
                                                            mc.vocab_size, mc.num_kv_heads));
  sc.num_host_blocks = e->executor_->host_blocks();
  sc.preemption.mode = sc.num_host_blocks > 0 ? config.preemption_mode : PreemptionMode::kRecompute;
  sc.host_prefix_cache = config.scheduler.prefix_caching && sc.num_host_blocks > 0;
  if (sc.preemption.mode == PreemptionMode::kAuto) {
    KVS_ASSIGN_OR_RETURN(sc.preemption, e->MeasurePreemptionCosts(backend));
  }
  sc.num_offload_blocks = capacity.offload_blocks;
  if (sc.num_offload_blocks > 0) {
    KVS_ASSIGN_OR_RETURN(sc.offload_bytes_per_s, e->MeasureOffloadReads(backend));
  }
  e->scheduler_ = std::make_unique<Scheduler>(sc, capacity.blocks);
  return e;
}

absl::StatusOr<PreemptionCostModel> Engine::MeasurePreemptionCosts(Backend& backend) {
  using Clock = std::chrono::steady_clock;
  KvCache& cache = executor_->cache();
  PreemptionCostModel m;
  m.mode = PreemptionMode::kAuto;
  m.bytes_per_block = static_cast<double>(cache.bytes_per_block());
  // Host link: swap a few blocks out and back, as a preemption would (after one warm-up).
  const int32_t n = std::min({8, cache.num_blocks(), cache.num_host_blocks()});
  std::vector<int32_t> out, in;
  for (int32_t i = 0; i < n; ++i) {
    out.insert(out.end(), {i, i});
    in.insert(in.end(), {i, i});
  }
  double copy_s = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    KVS_RETURN_IF_ERROR(cache.QueueMoves(backend, out, {}, in, /*by_layer=*/false));  // the link's rate
    KVS_RETURN_IF_ERROR(backend.Synchronize());
    copy_s = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  m.host_bytes_per_s = 2.0 * n * m.bytes_per_block / std::max(copy_s, 1e-9);
  // Prefill: one chunk of a synthetic prompt through the whole model (on every rank of the
  // group), its KV not stored (slot -1) and no logits taken.
  const RunnerLimits limits = executor_->runner().limits();
  const int32_t t = std::min({limits.max_tokens_per_step, 256, config_.scheduler.max_model_len});
  const int32_t bs = cache.block_size();
  StepInput step;
  step.Clear();
  for (int32_t i = 0; i < t; ++i) {
    step.token_ids.push_back(i % weights_->config().vocab_size);
    step.positions.push_back(i);
    step.slot_mapping.push_back(-1);
  }
  step.query_start.push_back(t);
  step.context_len.push_back(t);
  step.max_blocks_per_seq = std::min((t + bs - 1) / bs, limits.max_blocks_per_seq);
  for (int32_t b = 0; b < step.max_blocks_per_seq; ++b) step.block_table.push_back(b % cache.num_blocks());
  // Channel-quantized caches take the step as the scheduler would place it (its blocks sealed,
  // the tail in residual 0): nothing is cached yet at start-up, so what it writes is no one's.
  if (KvChannelQuantized(cache.dtype())) PlaceTailsInResiduals(step, cache.ring(), cache.groups().num_groups());
  // Every group may use the same blocks.
  RepeatForKvGroups(step, cache.groups().num_groups(), 0, bs, cache.ring().blocks);
  double prefill_s = 0;
  for (int rep = 0; rep < 2; ++rep) {
    const auto t0 = Clock::now();
    KVS_RETURN_IF_ERROR(RunStep(step, true).status());  // ends with a synchronize
    prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  m.prefill_tokens_per_s = t / std::max(prefill_s, 1e-9);
  std::fprintf(stderr,
               "[rank 0] preemption cost model: host link %.1f GB/s, prefill %.0f tok/s, %.2f MiB per block: a "
               "sequence is swapped when 2 x its blocks' bytes move faster than its tokens recompute "
               "(break-even: %.2f tokens per block)\n",
               m.host_bytes_per_s / 1e9, m.prefill_tokens_per_s, m.bytes_per_block / 1048576.0,
               m.prefill_tokens_per_s * m.SwapSeconds(1));
  return m;
}

absl::StatusOr<double> Engine::MeasureOffloadReads(Backend& backend) {
  using Clock = std::chrono::steady_clock;
  KvCache& cache = executor_->cache();
  // Offload blocks copied into device blocks: the same reads over the host link that attention
  // makes of them (after one warm-up).
  const int32_t n = std::min({8, cache.num_blocks(), cache.num_offload_blocks()});
  std::vector<int32_t> pairs;
  for (int32_t i = 0; i < n; ++i) pairs.insert(pairs.end(), {cache.num_blocks() + i, i});
  double s = 0;
  for (int rep = 0; rep < 2; ++rep) {
    const auto t0 = Clock::now();
    KVS_RETURN_IF_ERROR(cache.QueueMoves(backend, {}, pairs, {}, /*by_layer=*/false));
    KVS_RETURN_IF_ERROR(backend.Synchronize());
    s = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  const double rate = n * static_cast<double>(cache.bytes_per_block()) / std::max(s, 1e-9);
  std::fprintf(stderr,
               "[rank 0] KV offload: %d blocks (%.2f GiB) in host memory past the device's %d, read in place at %.1f "
               "GB/s (measured)\n",
               cache.num_offload_blocks(),
               cache.num_offload_blocks() * static_cast<double>(cache.bytes_per_block()) / (1u << 30),
               cache.num_blocks(), rate / 1e9);
  return rate;
}

absl::Status Engine::Add(Request r) {
  if (live_ids_.contains(r.id)) {  // any of its samples still running
    return absl::AlreadyExistsError(absl::StrFormat("request id '%s' is already in use", r.id));
  }
  if (!r.params.stop.empty() && tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("stop strings need a tokenizer");
  }
  for (int32_t t : r.prompt_ids) {
    if (t < 0 || t >= weights_->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat("request '%s': token id %d is outside the vocabulary", r.id, t));
    }
  }
  SeqState st;
  st.rng.seed(r.params.seed);
  st.arrival = Clock::now();
  for (const auto& s : r.params.stop) st.max_stop = std::max(st.max_stop, s.size());
  const std::string id = r.id;
  KVS_RETURN_IF_ERROR(scheduler_->Add(std::move(r)));
  for (const std::string& note : scheduler_->TakeNotes()) std::fprintf(stderr, "[rank 0] KV offload: %s\n", note.c_str());
  states_.emplace(id, std::move(st));  // StateKey of sample 0
  live_ids_[id] = 1;
  return absl::OkStatus();
}

bool Engine::Abort(const std::string& id) {
  if (!scheduler_->Abort(id)) return false;
  live_ids_.erase(id);
  for (auto it = states_.begin(); it != states_.end();) {
    auto cur = it++;
    if (cur->first.substr(0, cur->first.find('\x1f')) == id) states_.erase(cur);
  }
  return true;
}

TokenEvent Engine::Advance(Sequence& seq, SeqState& st, int32_t token, TokenLogprob* logprob) {
  const Clock::time_point now = Clock::now();
  if (st.tokens++ == 0) {
    st.first_token = now;
  } else {
    st.max_itl = std::max(st.max_itl, std::chrono::duration<double>(now - st.last_token).count());
  }
  st.last_token = now;
  TokenEvent ev;
  ev.request_id = seq.request.id;
  ev.index = seq.sample_index;
  const SamplingParams& p = seq.request.params;
  const bool eos = !p.ignore_eos && eos_ids_.contains(token);
  if (!eos) scheduler_->Append(&seq, token);
  if (logprob != nullptr && !eos) st.logprobs.push_back(std::move(*logprob));  // an EOS is no output token
  if (tokenizer_ != nullptr && !eos) st.raw += tokenizer_->DecodeBytes({token}, /*skip_special=*/true);

  size_t visible = st.raw.size();
  FinishReason reason = FinishReason::kNone;
  // Stop strings: search the region that new bytes could have completed.
  if (st.max_stop > 0) {
    const size_t from = st.emitted > st.max_stop ? st.emitted - st.max_stop : 0;
    size_t cut = std::string::npos;
    for (const auto& s : p.stop) cut = std::min(cut, st.raw.find(s, from));
    if (cut != std::string::npos) {
      visible = cut;
      reason = FinishReason::kStop;
    }
  }
  if (reason == FinishReason::kNone) {
    if (eos) reason = FinishReason::kStop;
    else if (seq.num_generated() >= p.max_tokens ||
             static_cast<int32_t>(seq.tokens.size()) >= config_.scheduler.max_model_len)
      reason = FinishReason::kLength;
  }
  if (reason == FinishReason::kNone) {
    // Hold back a possible stop-string prefix and an incomplete UTF-8 character.
    if (st.max_stop > 1) visible = visible >= st.max_stop - 1 ? visible - (st.max_stop - 1) : 0;
    visible -= IncompleteUtf8Suffix(std::string_view(st.raw).substr(0, visible));
  }
  if (visible > st.emitted) {
    // Bytes that cannot become valid UTF-8 (a byte-fallback or partial-character token followed
    // by one that does not continue it) go out as U+FFFD, as HF's decode writes them: a client's
    // JSON must stay valid text.
    ev.text_delta = ReplaceInvalidUtf8(std::string_view(st.raw).substr(st.emitted, visible - st.emitted));
    st.emitted = visible;
  }
  if (!ev.text_delta.empty() || reason != FinishReason::kNone) {
    ev.logprobs.assign(st.logprobs.begin() + static_cast<std::ptrdiff_t>(st.logprobs_sent), st.logprobs.end());
    st.logprobs_sent = st.logprobs.size();
  }
  if (reason != FinishReason::kNone) {
    ev.finished = true;
    ev.reason = reason;
    RequestResult r;
    r.id = seq.request.id;
    r.index = seq.sample_index;
    r.output_ids.assign(seq.tokens.begin() + seq.prompt_len, seq.tokens.end());
    r.logprobs = st.logprobs;
    r.text = tokenizer_ ? tokenizer_->Decode(r.output_ids, true) : "";
    if (reason == FinishReason::kStop && st.max_stop > 0 && visible < st.raw.size()) {
      r.text = ReplaceInvalidUtf8(std::string_view(st.raw).substr(0, visible));
    }
    r.reason = reason;
    r.prompt_tokens = seq.prompt_len;
    auto secs = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    r.metrics.queue_s = secs(st.arrival, st.first_scheduled);
    r.metrics.ttft_s = secs(st.arrival, st.first_token);
    r.metrics.tpot_s = st.tokens > 1 ? secs(st.first_token, now) / (st.tokens - 1) : 0.0;
    r.metrics.max_itl_s = st.max_itl;
    r.metrics.e2e_s = secs(st.arrival, now);
    results_.push_back(std::move(r));
  }
  return ev;
}

absl::StatusOr<std::vector<TokenEvent>> Engine::Step() {
  std::vector<TokenEvent> events;
  std::vector<ScheduledSeq> plan = scheduler_->Schedule(input_);
  last_step_ = StepStats{input_.num_seqs(), input_.num_tokens(), static_cast<int32_t>(input_.logit_rows.size())};
  if (plan.empty()) {
    // A step may only move blocks (every running sequence was just swapped out).
    if (!input_.swap_out.empty() || !input_.swap_in.empty()) KVS_RETURN_IF_ERROR(RunStep(input_, true).status());
    scheduler_->StepSubmitted();
    return events;
  }
  bool greedy_only = true, host_logits = false;
  const Clock::time_point now = Clock::now();
  for (const ScheduledSeq& ss : plan) {
    if (ss.samples) {
      const SamplingParams& p = ss.seq->request.params;
      greedy_only &= p.temperature <= 0.0f && p.logprobs < 0;
      host_logits |= p.logprobs >= 0;  // log-probabilities are computed from the host row
    }
    SeqState& st = states_.at(StateKey(*ss.seq));
    if (!st.scheduled) {
      st.scheduled = true;
      st.first_scheduled = now;
    }
  }
  // Every token this step draws, in order: each sampling row's sequence, then — when its prompt
  // just finished — its n - 1 siblings, which fork here sharing its blocks and draw their first
  // tokens from the same logits with their own generators (seeded seed + i).
  draws_.clear();
  fork_rngs_.clear();
  int32_t row = 0;
  for (const ScheduledSeq& ss : plan) {
    if (!ss.samples) continue;
    const SamplingParams& p = ss.seq->request.params;
    const int32_t forks = p.n > 1 && !ss.seq->forked ? p.n - 1 : 0;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    draws_.push_back({row, p.temperature, p.top_k, p.top_p, UniformDraw(unit(states_.at(StateKey(*ss.seq)).rng))});
    for (int32_t i = 1; i <= forks; ++i) {
      fork_rngs_.emplace_back(p.seed + static_cast<uint64_t>(i));
      draws_.push_back({row, p.temperature, p.top_k, p.top_p, UniformDraw(unit(fork_rngs_.back()))});
    }
    ++row;
  }
  const bool on_device =
      !greedy_only && !host_logits && static_cast<int64_t>(draws_.size()) <= executor_->runner().MaxDeviceSamples();
  KVS_ASSIGN_OR_RETURN(ModelRunner::Output out,
                       RunStep(input_, greedy_only, on_device ? std::span<const SampleRequest>(draws_) : std::span<const SampleRequest>()));
  scheduler_->StepSubmitted();
  const int32_t vocab = weights_->config().vocab_size;
  size_t draw = 0, fork = 0;
  std::vector<Sequence*> finished;
  for (const ScheduledSeq& ss : plan) {
    if (!ss.samples) continue;
    Sequence& seq = *ss.seq;
    const SamplingParams& p = seq.request.params;
    std::vector<Sequence*> samplers = {&seq};
    if (p.n > 1 && !seq.forked) {
      const SeqState& parent = states_.at(StateKey(seq));
      for (int32_t i = 1; i < p.n; ++i) {
        Sequence* child = scheduler_->Fork(seq, i);
        ++live_ids_[seq.request.id];
        SeqState st = parent;
        st.rng = fork_rngs_[fork++];
        states_.emplace(StateKey(*child), std::move(st));
        samplers.push_back(child);
      }
    }
    for (Sequence* s : samplers) {
      const SampleRequest& d = draws_[draw];
      const std::span<const float> logits = out.logits.empty() ? std::span<const float>() : out.logits.subspan(d.row * vocab, vocab);
      int32_t token;
      if (on_device) {
        token = out.sampled_ids[draw];
      } else if (greedy_only) {
        token = out.greedy_ids[d.row];
      } else {
        token = cpu::SampleToken(logits, cpu::SampleOptions{d.temperature, d.top_k, d.top_p}, d.uniform, sample_scratch_);
      }
      ++draw;
      if (token < 0 || token >= vocab) return absl::InternalError(absl::StrFormat("sampler returned token %d", token));
      SeqState& st = states_.at(StateKey(*s));
      std::optional<TokenLogprob> lp;
      if (p.logprobs >= 0) lp = ComputeLogprob(logits, token, p.logprobs);
      TokenEvent ev = Advance(*s, st, token, lp ? &*lp : nullptr);
      if (ev.finished) finished.push_back(s);
      if (ev.finished || !ev.text_delta.empty()) events.push_back(std::move(ev));
    }
  }
  for (Sequence* s : finished) {
    states_.erase(StateKey(*s));
    if (auto it = live_ids_.find(s->request.id); it != live_ids_.end() && --it->second == 0) live_ids_.erase(it);
    scheduler_->Finish(s);
  }
  return events;
}

absl::Status Engine::Shutdown() { return executor_->Stop(); }

std::vector<RequestResult> Engine::TakeResults() { return std::exchange(results_, {}); }

}  // namespace kvs
