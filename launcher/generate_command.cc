// `kvshard generate`: one prompt streamed to stdout, or a JSONL batch (--input/--output) whose
// answers are journaled as they finish (launcher/batch_journal.h), so that an interrupted job
// resumes with --resume. With data parallelism, global rank 0 routes every request to a group
// (parallel/dp_serving.h, as `serve` does) and hears each result as soon as it is done.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/batch_journal.h"
#include "launcher/bench_stats.h"
#include "launcher/commands.h"
#include "launcher/engine_flags.h"
#include "launcher/flags.h"
#include "launcher/jsonl_requests.h"
#include "launcher/progress.h"
#include "launcher/rank_setup.h"
#include "nlohmann/json.hpp"
#include "parallel/dp_serving.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/server/serving_group.h"

namespace kvs {
namespace {

using Clock = std::chrono::steady_clock;

// Prompt ids for plain text or a chat conversation.
absl::StatusOr<std::vector<int32_t>> EncodePrompt(const LoadedModel& m, const std::optional<std::string>& prompt,
                                                  const std::vector<ChatMessage>& messages) {
  if (!m.tokenizer) return absl::FailedPreconditionError("the model has no tokenizer (tokenizer.json)");
  if (prompt) return m.tokenizer->Encode(*prompt, /*add_special_tokens=*/true);
  if (!m.chat_template) return absl::FailedPreconditionError("chat needs a chat template: " + m.chat_template_error);
  KVS_ASSIGN_OR_RETURN(std::string text, m.chat_template->Render(messages, /*add_generation_prompt=*/true));
  return m.tokenizer->Encode(text, /*add_special_tokens=*/false);
}

// One line of the latency figures serving benchmarks report, over every request of the batch.
void PrintLatencySummary(const std::string& tag, const std::vector<RequestResult>& results) {
  std::vector<double> ttft, tpot, e2e;
  for (const RequestResult& r : results) {
    ttft.push_back(r.metrics.ttft_s * 1e3);
    if (r.output_ids.size() > 1) tpot.push_back(r.metrics.tpot_s * 1e3);
    e2e.push_back(r.metrics.e2e_s);
  }
  if (tpot.empty()) tpot.push_back(0);
  std::fprintf(stderr, "%s latency: TTFT p50 %.1f / p99 %.1f ms, TPOT p50 %.2f / p99 %.2f ms, e2e p50 %.2f / p99 %.2f s\n",
               tag.c_str(), Percentile(ttft, 50), Percentile(ttft, 99), Percentile(tpot, 50), Percentile(tpot, 99),
               Percentile(e2e, 50), Percentile(e2e, 99));
}

// The output line of a finished request: sample 0's fields, plus every sample under "choices"
// when n > 1.
nlohmann::json ResultRecord(std::vector<RequestResult>& samples) {
  std::sort(samples.begin(), samples.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
  const RequestResult& r = samples.front();
  nlohmann::json j = {{"id", r.id},
                      {"text", r.text},
                      {"finish_reason", FinishReasonName(r.reason)},
                      {"prompt_tokens", r.prompt_tokens},
                      {"output_tokens", r.output_ids.size()},
                      {"output_ids", r.output_ids},
                      {"metrics",
                       {{"queue_s", r.metrics.queue_s},
                        {"ttft_s", r.metrics.ttft_s},
                        {"tpot_s", r.metrics.tpot_s},
                        {"max_itl_s", r.metrics.max_itl_s},
                        {"e2e_s", r.metrics.e2e_s}}}};
  if (samples.size() > 1) {
    for (const RequestResult& s : samples) {
      j["choices"].push_back({{"index", s.index},
                              {"text", s.text},
                              {"finish_reason", FinishReasonName(s.reason)},
                              {"output_ids", s.output_ids}});
    }
  }
  return j;
}

// SIGTERM (scancel, a Slurm time limit, mpirun forwarding it) or SIGINT: every rank keeps
// running; global rank 0 stops after its current step, aborts what is still running, releases
// the other ranks and exits with what the journal holds.
std::atomic<bool> g_interrupted{false};
extern "C" void OnStopSignal(int) { g_interrupted.store(true); }

// A request sent to a group, until all of its samples are back.
struct InFlight {
  const BatchItem* item;
  int group;
  int32_t samples_left;
  std::vector<RequestResult> samples;
};

// `rt` outlives the call, so that on failure every rank is stopped before MPI would wait for them.
absl::Status Generate(std::unique_ptr<RankRuntime>& rt) {
  const std::string model_path = absl::GetFlag(FLAGS_model);
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  const std::string input = absl::GetFlag(FLAGS_input);
  const std::string output = absl::GetFlag(FLAGS_output);
  const bool strict = absl::GetFlag(FLAGS_strict);
  const bool resume = absl::GetFlag(FLAGS_resume);
  if (model_path.empty()) return absl::InvalidArgumentError("--model is required");
  if (prompt.empty() == input.empty()) return absl::InvalidArgumentError("give exactly one of --prompt or --input");
  if (!input.empty() && output.empty()) return absl::InvalidArgumentError("--input needs --output");
  if (input.empty() && (resume || strict)) return absl::InvalidArgumentError("--resume and --strict are for --input batches");
  KVS_ASSIGN_OR_RETURN(SamplingParams defaults, SamplingParamsFromFlags());

  std::vector<BatchItem> items;
  if (!input.empty()) {
    KVS_ASSIGN_OR_RETURN(items, ReadBatchFile(input, defaults, strict));
  } else {
    BatchItem item;
    item.id = "0";
    item.params = defaults;
    item.line = 1;
    if (absl::GetFlag(FLAGS_chat)) {
      if (!absl::GetFlag(FLAGS_system).empty()) item.messages.push_back({"system", absl::GetFlag(FLAGS_system)});
      item.messages.push_back({"user", prompt});
    } else {
      item.prompt = prompt;
    }
    items.push_back(std::move(item));
  }

  // Every rank, before the model loads: a signal then stops the batch instead of the process
  // (a rank gone mid-step would fail its peers).
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
  KVS_ASSIGN_OR_RETURN(rt, StartRank(model_path));
  if (rt->worker) return RunWorker(*rt);
  // Data parallel: every leader reports its group's KV capacity; leaders other than rank 0 then
  // run what rank 0 sends them (as `serve` does) until it says stop.
  const bool data_parallel = rt->context->leaders() != nullptr;
  KVS_ASSIGN_OR_RETURN(std::vector<int64_t> capacities, GatherGroupCapacities(rt->context->leaders(), *rt->engine));
  if (data_parallel && rt->context->leaders()->rank() != 0)
    return ServeAsRemoteGroup(*rt->context->leaders(), *rt->engine, rt->tag());
  Engine& engine = *rt->engine;

  std::optional<BatchJournal> journal;
  if (!input.empty()) {
    KVS_ASSIGN_OR_RETURN(BatchJournal j, BatchJournal::Open(output, items, resume));
    journal.emplace(std::move(j));
    if (journal->answered() > 0) {
      std::fprintf(stderr, "%s resuming: %lld of %zu request(s) already answered in %s\n", rt->tag().c_str(),
                   static_cast<long long>(journal->answered()), items.size(), journal->path().c_str());
    }
  }
  LocalGroup local(engine);
  std::vector<std::unique_ptr<ServingGroup>> remote = ConnectRemoteGroups(rt->context->leaders());
  std::vector<ServingGroup*> groups = {&local};
  for (auto& g : remote) groups.push_back(g.get());
  std::unique_ptr<RequestRouter> router;
  if (data_parallel) router = MakeDpRouter(capacities, engine.kv_cache().block_size(), rt->dp_routing);
  auto stop_groups = [&]() -> absl::Status {
    for (auto& g : remote) KVS_RETURN_IF_ERROR(g->Stop());
    return local.Stop();
  };

  // A line that cannot run gets its error record; with --strict, and for a single --prompt
  // (which has no record to write), it fails the run instead.
  std::vector<std::pair<const BatchItem*, nlohmann::json>> answers;
  int64_t error_records = 0;
  auto refuse = [&](const BatchItem& item, const absl::Status& s) -> absl::Status {
    if (strict || input.empty()) {
      KVS_RETURN_IF_ERROR(stop_groups());
      if (input.empty()) return s;
      return absl::Status(s.code(), absl::StrFormat("%s:%d: request '%s': %s", input, item.line, item.id, s.message()));
    }
    answers.emplace_back(&item, ErrorRecord(item, std::string(s.message())));
    ++error_records;
    return absl::OkStatus();
  };

  // Encode each request and send it to its group.
  absl::flat_hash_map<std::string, InFlight> in_flight;
  int64_t expected = 0, finished = 0, tokens = 0;
  for (const BatchItem& item : items) {
    if (journal && journal->Answered(item.line)) continue;
    if (!item.error.empty()) {  // invalid lines reach here only without --strict
      answers.emplace_back(&item, ErrorRecord(item, item.error));
      ++error_records;
      continue;
    }
    auto ids = item.prompt_ids.empty() ? EncodePrompt(*rt->model, item.prompt, item.messages)
                                       : absl::StatusOr<std::vector<int32_t>>(item.prompt_ids);
    absl::Status s = ids.status();
    if (s.ok()) {
      Request r{item.id, *std::move(ids), item.params, item.priority};
      const int g = router ? router->Route(r) : 0;
      s = groups[g]->Add(std::move(r));
      if (s.ok()) {
        in_flight[item.id] = InFlight{&item, g, item.params.n, {}};
        expected += item.params.n;
      } else if (router) {
        router->Done(g, item.id);
      }
    }
    if (!s.ok()) KVS_RETURN_IF_ERROR(refuse(item, s));
  }
  if (journal) KVS_RETURN_IF_ERROR(journal->Append(answers));
  answers.clear();

  const bool stream = input.empty();
  const auto t0 = Clock::now();
  std::vector<RequestResult> results;  // every sample finished in this run, for the summary
  std::optional<Progress> progress;
  if (!stream) progress.emplace(rt->tag(), expected);
  while (!in_flight.empty() && !g_interrupted.load()) {
    bool produced = false;
    for (size_t g = 0; g < groups.size(); ++g) {
      if (!groups[g]->Busy()) continue;
      GroupOutput out;
      KVS_RETURN_IF_ERROR(groups[g]->Advance(out));
      tokens += g == 0 ? engine.last_step().num_sampled : static_cast<int64_t>(out.events.size());
      produced |= !out.events.empty() || !out.results.empty() || !out.refused.empty();
      for (const TokenEvent& ev : out.events) {
        if (stream && !ev.text_delta.empty()) {
          std::fwrite(ev.text_delta.data(), 1, ev.text_delta.size(), stdout);
          std::fflush(stdout);
        }
      }
      for (auto& [id, status] : out.refused) {  // a remote group could not take it
        auto it = in_flight.find(id);
        if (it == in_flight.end()) continue;
        KVS_RETURN_IF_ERROR(refuse(*it->second.item, status));
        expected -= it->second.samples_left;
        if (router) router->Done(it->second.group, id);
        in_flight.erase(it);
      }
      for (RequestResult& r : out.results) {
        auto it = in_flight.find(r.id);
        if (it == in_flight.end()) continue;
        ++finished;
        results.push_back(r);
        InFlight& f = it->second;
        f.samples.push_back(std::move(r));
        if (--f.samples_left > 0) continue;
        answers.emplace_back(f.item, ResultRecord(f.samples));
        if (router) router->Done(f.group, f.item->id);
        in_flight.erase(it);
      }
    }
    if (journal) KVS_RETURN_IF_ERROR(journal->Append(answers));  // durable before the next step
    answers.clear();
    if (progress) progress->Update(finished, tokens);
    if (!produced && !local.Busy()) std::this_thread::sleep_for(std::chrono::microseconds(500));  // remote groups
  }
  if (progress) progress->Finish(finished, tokens);
  if (g_interrupted.load() && !in_flight.empty()) {
    for (auto& [id, f] : in_flight) groups[f.group]->Abort(id);
    KVS_RETURN_IF_ERROR(stop_groups());
    if (stream) std::printf("\n");
    if (journal) {
      std::fprintf(stderr,
                   "%s interrupted: %lld of %zu request(s) answered and kept in %s, %zu stopped; run the same command "
                   "with --resume to finish\n",
                   rt->tag().c_str(), static_cast<long long>(journal->answered()), items.size(),
                   journal->path().c_str(), in_flight.size());
    }
    return absl::CancelledError("interrupted by a signal");
  }
  KVS_RETURN_IF_ERROR(stop_groups());
  int64_t generated = 0;
  for (const auto& r : results) generated += static_cast<int64_t>(r.output_ids.size());
  const double gen_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stream) {
    std::printf("\n");
    std::fflush(stdout);  // the newline before the stats line on stderr
  }
  const Scheduler& sched = engine.scheduler();
  std::fprintf(stderr,
               "%s %zu request(s), %lld tokens generated in %.2f s (%.1f tok/s, %s backend, tp %d); %lld preemption(s), "
               "%lld by swap; prefix cache hit %lld of %lld prompt tokens (%lld from the host tier)%s\n",
               rt->tag().c_str(), results.size(), static_cast<long long>(generated), gen_s, generated / std::max(gen_s, 1e-9),
               rt->backend->Name().c_str(), rt->context->layout().tp, static_cast<long long>(sched.num_preemptions()),
               static_cast<long long>(sched.num_swap_preemptions()), static_cast<long long>(sched.prefix_hit_tokens()),
               static_cast<long long>(sched.prefix_query_tokens()), static_cast<long long>(sched.host_prefix_hit_tokens()),
               data_parallel ? " (group 0's scheduler)" : "");
  if (results.size() > 1) PrintLatencySummary(rt->tag(), results);
  if (journal) {
    KVS_RETURN_IF_ERROR(journal->Finish(items));
    if (error_records > 0) {
      std::fprintf(stderr, "%s %lld of %zu line(s) could not run and got error records in %s\n", rt->tag().c_str(),
                   static_cast<long long>(error_records), items.size(), output.c_str());
    }
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate() {
  std::unique_ptr<RankRuntime> rt;
  const absl::Status s = Generate(rt);
  // Interrupted after every rank was released: a clean exit with the shell's code for SIGTERM.
  if (s.code() == absl::StatusCode::kCancelled && g_interrupted.load()) return 128 + SIGTERM;
  return FinishRank("generate", s);
}

}  // namespace kvs
