// `kvshard serve`: the OpenAI-compatible server on global rank 0; under mpirun/srun the other
// ranks of each tensor-parallel group run as workers, and with data parallelism (ranks = dp x tp)
// the other groups' leaders serve the requests rank 0 routes to them (parallel/dp_serving.h).
// SIGTERM or SIGINT to rank 0 drains: the listener closes, /health says draining (503), new
// requests on open connections get 503, in-flight ones finish — or, at --drain-timeout, are
// answered with 503 — then every rank stops.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/rank_setup.h"
#include "parallel/dp_serving.h"
#include "runtime/server/http_server.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "serve: address to listen on (0.0.0.0 for every interface)");
ABSL_FLAG(int32_t, port, 8000, "serve: TCP port");
ABSL_FLAG(std::string, api_key, "", "serve: require 'Authorization: Bearer KEY' on /v1/ routes");
ABSL_FLAG(std::string, served_model_name, "", "serve: the model name clients use (default: the --model argument)");
ABSL_FLAG(int64_t, max_body_bytes, 1 << 20, "serve: largest request body accepted (413 beyond)");
ABSL_FLAG(int32_t, max_in_flight, 4096, "serve: requests accepted at once (503 with Retry-After beyond)");
ABSL_FLAG(double, drain_timeout, 30, "serve: seconds a SIGTERM gives in-flight requests before they are answered with 503");

namespace kvs {
namespace {

EngineService* g_service = nullptr;
extern "C" void OnSignal(int) {
  if (g_service != nullptr) g_service->Drain();  // stores an atomic flag: async-signal-safe
}

absl::Status Serve(std::unique_ptr<RankRuntime>& rt) {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required");
  const int32_t port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) return absl::InvalidArgumentError(absl::StrFormat("--port %d is not a TCP port", port));
  if (absl::GetFlag(FLAGS_max_body_bytes) < 1024) return absl::InvalidArgumentError("--max-body-bytes must be >= 1024");
  if (absl::GetFlag(FLAGS_max_in_flight) < 1) return absl::InvalidArgumentError("--max-in-flight must be >= 1");
  const double drain_s = absl::GetFlag(FLAGS_drain_timeout);
  if (!(drain_s > 0 && drain_s <= 24 * 3600)) {
    return absl::InvalidArgumentError(absl::StrFormat("--drain-timeout %g must be a number of seconds in (0, 86400]", drain_s));
  }
  // The last answers (503s included) get a short grace to be written, inside the timeout.
  const auto drain_total = std::chrono::milliseconds(static_cast<int64_t>(drain_s * 1000));
  const auto write_grace = std::min(std::chrono::milliseconds(1000), drain_total / 4);
  KVS_ASSIGN_OR_RETURN(rt, StartRank(model));
  if (rt->worker) {
    // mpirun and srun forward SIGTERM to every rank: workers leave when the leader has drained
    // and releases them, not before (a worker gone mid-step would fail the leader's requests).
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    return RunWorker(*rt);
  }
  if (!rt->model->tokenizer) return absl::FailedPreconditionError("serving needs a tokenizer (tokenizer.json or a GGUF)");
  // Data parallel: every leader reports its group's KV capacity; leaders other than rank 0 then
  // serve what rank 0 sends them, and stop when it says so.
  const bool data_parallel = rt->context->leaders() != nullptr;
  KVS_ASSIGN_OR_RETURN(std::vector<int64_t> capacities, GatherGroupCapacities(rt->context->leaders(), *rt->engine));
  if (data_parallel && rt->context->leaders()->rank() != 0) {
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGINT, SIG_IGN);
    return ServeAsRemoteGroup(*rt->context->leaders(), *rt->engine, rt->tag());
  }
  LocalGroup local(*rt->engine);
  std::vector<std::unique_ptr<ServingGroup>> remote = ConnectRemoteGroups(rt->context->leaders());
  std::vector<ServingGroup*> groups = {&local};
  for (auto& g : remote) groups.push_back(g.get());
  std::unique_ptr<RequestRouter> router;
  if (data_parallel) {
    router = MakeDpRouter(capacities, rt->engine->kv_cache().block_size(), rt->dp_routing);
    std::string caps;
    for (size_t g = 0; g < capacities.size(); ++g) caps += absl::StrFormat("%s%d", g ? ", " : "", capacities[g]);
    std::fprintf(stderr, "%s routing over %zu groups (KV capacity in blocks: %s), %s\n", rt->tag().c_str(),
                 capacities.size(), caps.c_str(),
                 rt->dp_routing == DpRouting::kRoundRobin ? "round-robin" : "prefix-aware");
  }
  ServiceLimits limits;
  limits.max_model_len = rt->engine->scheduler().config().max_model_len;
  limits.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  limits.drain_timeout = drain_total - write_grace;
  EngineService service(groups, router.get(), *rt->model->tokenizer,
                        rt->model->chat_template ? &*rt->model->chat_template : nullptr, limits);
  HttpOptions opt;
  opt.host = absl::GetFlag(FLAGS_host);
  opt.port = port;
  opt.api_key = absl::GetFlag(FLAGS_api_key);
  opt.model_name = absl::GetFlag(FLAGS_served_model_name).empty() ? model : absl::GetFlag(FLAGS_served_model_name);
  opt.max_body_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_body_bytes));
  opt.default_max_tokens = absl::GetFlag(FLAGS_max_tokens);
  HttpServer http(service, opt);
  KVS_RETURN_IF_ERROR(http.Start());
  service.SetOnDrain([&http] { http.StopAccepting(); });
  g_service = &service;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::fprintf(stderr, "%s serving '%s' on http://%s:%d (OpenAI API under /v1)\n", rt->tag().c_str(),
               opt.model_name.c_str(), opt.host.c_str(), port);
  const absl::Status run = service.Run();  // until drained
  g_service = nullptr;
  http.Stop(write_grace);
  std::fprintf(stderr, "%s drained and stopped\n", rt->tag().c_str());
  KVS_RETURN_IF_ERROR(run);
  for (auto& g : remote) KVS_RETURN_IF_ERROR(g->Stop());  // every request is done: release the groups
  return local.Stop();
}

}  // namespace

int RunServe() {
  std::unique_ptr<RankRuntime> rt;  // outlives Serve: see generate
  return FinishRank("serve", Serve(rt));
}

}  // namespace kvs
