#include "launcher/serve_bench.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/bench_stats.h"
#include "launcher/flags.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, url, "", "bench: benchmark a running server at this base URL (e.g. http://127.0.0.1:8000)");
ABSL_FLAG(double, rate, 0, "bench --url: Poisson arrival rate, requests per second; 0 sends all at once");
ABSL_FLAG(std::string, result_json, "", "bench --url: also write the results to this JSON file");
ABSL_DECLARE_FLAG(int32_t, num_prompts);
ABSL_DECLARE_FLAG(std::string, dataset);
ABSL_DECLARE_FLAG(double, length_scale);
ABSL_DECLARE_FLAG(int32_t, input_len);
ABSL_DECLARE_FLAG(int32_t, output_len);

namespace kvs {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Outcome {
  bool ok = false;
  std::string error;
  int32_t prompt_tokens = 0, output_tokens = 0;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;  // gaps between streamed chunks
};

// One streamed completion; times the chunks as they arrive.
Outcome Send(const std::string& host, int port, const std::string& model, const std::vector<int32_t>& prompt,
             int32_t max_tokens) {
  Outcome o;
  o.prompt_tokens = static_cast<int32_t>(prompt.size());
  httplib::Client cli(host, port);
  cli.set_read_timeout(600, 0);
  const json body = {{"model", model}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"stream", true},
                     {"ignore_eos", true}, {"temperature", 0}};
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  const auto t0 = Clock::now();
  auto last = t0;
  bool first = true;
  std::string buffer;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
      const std::string event = buffer.substr(0, end);
      if (!absl::StartsWith(event, "data: ") || event == "data: [DONE]") continue;
      const json chunk = json::parse(event.substr(6), nullptr, false);
      if (chunk.is_discarded() || !chunk.contains("choices")) continue;
      const auto now = Clock::now();
      if (first) {
        o.ttft = std::chrono::duration<double>(now - t0).count();
        first = false;
      } else {
        o.itl.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error err;
  if (!cli.send(req, res, err) || res.status != 200) {
    o.error = err != httplib::Error::Success ? httplib::to_string(err) : absl::StrFormat("HTTP %d", res.status);
    return o;
  }
  o.e2e = std::chrono::duration<double>(Clock::now() - t0).count();
  o.output_tokens = max_tokens;  // ignore_eos: exactly max_tokens
  o.ok = !first;
  if (first) o.error = "no streamed chunk";
  return o;
}

}  // namespace

absl::Status ServingBenchmark() {
  const std::string url = absl::GetFlag(FLAGS_url);
  const std::string prefix = "http://";
  if (!absl::StartsWith(url, prefix)) return absl::InvalidArgumentError("--url must start with http://");
  std::string hostport = url.substr(prefix.size());
  if (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  const size_t colon = hostport.rfind(':');
  const std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  int port = 80;
  if (colon != std::string::npos && !absl::SimpleAtoi(hostport.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrFormat("--url '%s': bad port", url));
  }
  const int32_t n = absl::GetFlag(FLAGS_num_prompts);
  const double rate = absl::GetFlag(FLAGS_rate);
  if (n < 1 || rate < 0) return absl::InvalidArgumentError("--num-prompts must be >= 1 and --rate >= 0");

  // The served model's name and vocabulary size come from the server.
  httplib::Client probe(host, port);
  auto models = probe.Get("/v1/models");
  if (!models || models->status != 200) return absl::UnavailableError(absl::StrFormat("no OpenAI server answers at %s", url));
  const json mj = json::parse(models->body, nullptr, false);
  if (mj.is_discarded() || mj["data"].empty()) return absl::DataLossError("malformed /v1/models answer");
  const std::string model = mj["data"][0]["id"].get<std::string>();

  // Prompts: random token ids (ids below 1000 exist in every vocabulary here), lengths fixed or
  // drawn from the ShareGPT-like mix; --seed draws another set (a repeated run against the same
  // server would otherwise hit its prefix cache).
  std::mt19937 rng(99 + absl::GetFlag(FLAGS_seed));
  const bool mix = absl::GetFlag(FLAGS_dataset) == "sharegpt-like";
  const double scale = absl::GetFlag(FLAGS_length_scale);
  auto draw = [&](double mean) { return std::min(DrawLogNormalLength(rng, mean * scale), 4000); };
  std::vector<std::pair<std::vector<int32_t>, int32_t>> work;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t in = mix ? draw(kShareGptMeanPrompt) : absl::GetFlag(FLAGS_input_len);
    const int32_t out = mix ? draw(kShareGptMeanOutput) : absl::GetFlag(FLAGS_output_len);
    std::vector<int32_t> p(in);
    for (auto& t : p) t = static_cast<int32_t>(rng() % 1000);
    work.emplace_back(std::move(p), out);
  }
  std::vector<Outcome> outcomes(n);
  std::vector<std::thread> threads;
  std::exponential_distribution<double> gap(rate > 0 ? rate : 1.0);
  const auto start = Clock::now();
  for (int32_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] { outcomes[i] = Send(host, port, model, work[i].first, work[i].second); });
    if (rate > 0) std::this_thread::sleep_for(std::chrono::duration<double>(gap(rng)));
  }
  for (auto& t : threads) t.join();
  const double total = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> ttft, tpot, itl, e2e;
  int64_t ok = 0, in_tokens = 0, out_tokens = 0;
  std::string first_error;
  for (const Outcome& o : outcomes) {
    if (!o.ok) {
      if (first_error.empty()) first_error = o.error;
      continue;
    }
    ++ok;
    in_tokens += o.prompt_tokens;
    out_tokens += o.output_tokens;
    ttft.push_back(o.ttft * 1e3);
    e2e.push_back(o.e2e * 1e3);
    if (o.output_tokens > 1) tpot.push_back((o.e2e - o.ttft) / (o.output_tokens - 1) * 1e3);
    for (double g : o.itl) itl.push_back(g * 1e3);
  }
  json result = {{"url", url}, {"model", model}, {"rate", rate}, {"num_prompts", n}, {"completed", ok},
                 {"duration_s", total}, {"input_tokens", in_tokens}, {"output_tokens", out_tokens},
                 {"request_throughput", ok / total}, {"output_throughput", out_tokens / total}};
  std::printf("| serving | %s | %d requests at %s/s | %lld ok | %.2f s | %.2f req/s | %.0f output tok/s |\n", model.c_str(),
              n, rate > 0 ? absl::StrFormat("%g", rate).c_str() : "inf", static_cast<long long>(ok), total, ok / total,
              out_tokens / total);
  for (auto [name, v] : {std::pair{"ttft_ms", &ttft}, std::pair{"tpot_ms", &tpot}, std::pair{"itl_ms", &itl},
                         std::pair{"e2e_ms", &e2e}}) {
    double mean = 0;
    for (double x : *v) mean += x / std::max<size_t>(v->size(), 1);
    result[name] = {{"mean", mean}, {"p50", Percentile(*v, 50)}, {"p90", Percentile(*v, 90)}, {"p99", Percentile(*v, 99)}};
    result["samples"][name] = *v;  // every request's (or gap's) figure, for plots (scripts/plot_serving_bench.py)
    std::printf("| %s | mean %.2f | p50 %.2f | p90 %.2f | p99 %.2f |\n", name, mean, Percentile(*v, 50), Percentile(*v, 90), Percentile(*v, 99));
  }
  if (const std::string path = absl::GetFlag(FLAGS_result_json); !path.empty()) {
    std::ofstream(path) << result.dump(2) << "\n";
  }
  if (ok < n) return absl::UnavailableError(absl::StrFormat("%d of %d requests failed; first: %s", n - ok, n, first_error));
  return absl::OkStatus();
}

}  // namespace kvs
