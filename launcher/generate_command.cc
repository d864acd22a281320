// `kvshard generate`: one prompt streamed to stdout, or a JSONL batch (--input/--output).
#include <algorithm>
#include <chrono>
#include <optional>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/engine_flags.h"
#include "launcher/bench_stats.h"
#include "launcher/commands.h"
#include "launcher/dp_dispatch.h"
#include "launcher/progress.h"
#include "launcher/rank_setup.h"
#include "launcher/flags.h"
#include "launcher/jsonl_requests.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"

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

absl::Status WriteResults(const std::string& path, const std::vector<BatchItem>& items,
                          std::vector<RequestResult> results) {
  // Write beside the target and rename, so a failed run never leaves half a file.
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrFormat("%s: cannot write the output file", path));
    absl::flat_hash_map<std::string, std::vector<RequestResult*>> by_id;
    for (auto& r : results) by_id[r.id].push_back(&r);
    for (const BatchItem& item : items) {
      std::vector<RequestResult*>& samples = by_id.at(item.id);
      std::sort(samples.begin(), samples.end(), [](auto* a, auto* b) { return a->index < b->index; });
      const RequestResult& r = *samples.front();
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
        for (const RequestResult* s : samples) {
          j["choices"].push_back({{"index", s->index},
                                  {"text", s->text},
                                  {"finish_reason", FinishReasonName(s->reason)},
                                  {"output_ids", s->output_ids}});
        }
      }
      out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    if (!out.flush()) return absl::DataLossError(absl::StrFormat("%s: write failed", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::DataLossError(absl::StrFormat("%s: rename failed: %s", path, ec.message()));
  return absl::OkStatus();
}

// `rt` outlives the call, so that on failure every rank is stopped before MPI would wait for them.
absl::Status Generate(std::unique_ptr<RankRuntime>& rt) {
  const std::string model_path = absl::GetFlag(FLAGS_model);
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  const std::string input = absl::GetFlag(FLAGS_input);
  const std::string output = absl::GetFlag(FLAGS_output);
  if (model_path.empty()) return absl::InvalidArgumentError("--model is required");
  if (prompt.empty() == input.empty()) return absl::InvalidArgumentError("give exactly one of --prompt or --input");
  if (!input.empty() && output.empty()) return absl::InvalidArgumentError("--input needs --output");
  KVS_ASSIGN_OR_RETURN(SamplingParams defaults, SamplingParamsFromFlags());

  std::vector<BatchItem> items;
  if (!input.empty()) {
    KVS_ASSIGN_OR_RETURN(items, ReadBatchFile(input, defaults));
  } else {
    BatchItem item{"0", std::nullopt, {}, {}, defaults};
    if (absl::GetFlag(FLAGS_chat)) {
      if (!absl::GetFlag(FLAGS_system).empty()) item.messages.push_back({"system", absl::GetFlag(FLAGS_system)});
      item.messages.push_back({"user", prompt});
    } else {
      item.prompt = prompt;
    }
    items.push_back(std::move(item));
  }

  KVS_ASSIGN_OR_RETURN(rt, StartRank(model_path));
  if (rt->worker) return RunWorker(*rt);
  Engine& engine = *rt->engine;
  const bool root = rt->world.rank == 0;

  // Global rank 0 reads and encodes the batch; with data parallelism it routes it to the groups.
  std::vector<Request> requests;
  if (root) {
    for (const BatchItem& item : items) {
      auto ids = item.prompt_ids.empty() ? EncodePrompt(*rt->model, item.prompt, item.messages)
                                         : absl::StatusOr<std::vector<int32_t>>(item.prompt_ids);
      if (!ids.ok()) return absl::Status(ids.status().code(), absl::StrFormat("request '%s': %s", item.id, ids.status().message()));
      requests.push_back(Request{item.id, *std::move(ids), item.params, item.priority});
    }
  }
  KVS_ASSIGN_OR_RETURN(requests, DispatchRequests(*rt, std::move(requests)));
  for (Request& r : requests) KVS_RETURN_IF_ERROR(engine.Add(std::move(r)));

  const bool stream = input.empty() && root;
  const auto t0 = Clock::now();
  int64_t expected = 0, finished = 0, tokens = 0;
  for (const Request& r : requests) expected += r.params.n;
  std::optional<Progress> progress;
  if (!stream) progress.emplace(rt->tag(), expected);
  while (engine.HasWork()) {
    KVS_ASSIGN_OR_RETURN(std::vector<TokenEvent> events, engine.Step());
    tokens += engine.last_step().num_sampled;
    for (const TokenEvent& ev : events) {
      finished += ev.finished ? 1 : 0;
      if (stream && !ev.text_delta.empty()) {
        std::fwrite(ev.text_delta.data(), 1, ev.text_delta.size(), stdout);
        std::fflush(stdout);
      }
    }
    if (progress) progress->Update(finished, tokens);
  }
  if (progress) progress->Finish(finished, tokens);
  KVS_RETURN_IF_ERROR(engine.Shutdown());
  std::vector<RequestResult> mine = engine.TakeResults();
  int64_t generated = 0;
  for (const auto& r : mine) generated += static_cast<int64_t>(r.output_ids.size());
  const double gen_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (stream) {
    std::printf("\n");
    std::fflush(stdout);  // the newline before the stats line on stderr
  }
  const Scheduler& sched = engine.scheduler();
  std::fprintf(stderr,
               "%s %zu request(s), %lld tokens generated in %.2f s (%.1f tok/s, %s backend, tp %d); %lld preemption(s), "
               "%lld by swap; prefix cache hit %lld of %lld prompt tokens (%lld from the host tier)\n",
               rt->tag().c_str(), mine.size(), static_cast<long long>(generated), gen_s, generated / std::max(gen_s, 1e-9),
               rt->backend->Name().c_str(), rt->context->layout().tp, static_cast<long long>(sched.num_preemptions()),
               static_cast<long long>(sched.num_swap_preemptions()), static_cast<long long>(sched.prefix_hit_tokens()),
               static_cast<long long>(sched.prefix_query_tokens()), static_cast<long long>(sched.host_prefix_hit_tokens()));
  KVS_ASSIGN_OR_RETURN(std::vector<RequestResult> results, CollectResults(*rt, std::move(mine)));
  if (root && results.size() > 1) PrintLatencySummary(rt->tag(), results);
  if (root && !output.empty()) KVS_RETURN_IF_ERROR(WriteResults(output, items, std::move(results)));
  return absl::OkStatus();
}

}  // namespace

int RunGenerate() {
  std::unique_ptr<RankRuntime> rt;
  return FinishRank("generate", Generate(rt));
}

}  // namespace kvs
