#include "launcher/dp_dispatch.h"

#include <cstdio>

#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "parallel/dp_router.h"
#include "runtime/kv/block_hash.h"

namespace kvs {
namespace {

using nlohmann::json;

json ToJson(const Request& r) {
  const SamplingParams& p = r.params;
  return json{{"id", r.id},       {"prompt_ids", r.prompt_ids}, {"temperature", p.temperature}, {"top_k", p.top_k},
              {"top_p", p.top_p}, {"seed", p.seed},             {"max_tokens", p.max_tokens},   {"stop", p.stop},
              {"ignore_eos", p.ignore_eos}, {"n", p.n}, {"priority", r.priority}};
}

Request RequestFromJson(const json& j) {
  Request r;
  r.id = j.at("id").get<std::string>();
  r.prompt_ids = j.at("prompt_ids").get<std::vector<int32_t>>();
  SamplingParams& p = r.params;
  p.temperature = j.at("temperature").get<float>();
  p.top_k = j.at("top_k").get<int32_t>();
  p.top_p = j.at("top_p").get<float>();
  p.seed = j.at("seed").get<uint64_t>();
  p.max_tokens = j.at("max_tokens").get<int32_t>();
  p.stop = j.at("stop").get<std::vector<std::string>>();
  p.ignore_eos = j.at("ignore_eos").get<bool>();
  p.n = j.at("n").get<int32_t>();
  r.priority = j.at("priority").get<int32_t>();
  return r;
}

json ToJson(const RequestResult& r) {
  const RequestMetrics& m = r.metrics;
  return json{{"id", r.id},
              {"index", r.index},
              {"output_ids", r.output_ids},
              {"text", r.text},
              {"reason", static_cast<int>(r.reason)},
              {"prompt_tokens", r.prompt_tokens},
              {"metrics", {m.queue_s, m.ttft_s, m.tpot_s, m.max_itl_s, m.e2e_s}}};
}

RequestResult ResultFromJson(const json& j) {
  RequestResult r;
  r.id = j.at("id").get<std::string>();
  r.index = j.at("index").get<int32_t>();
  r.output_ids = j.at("output_ids").get<std::vector<int32_t>>();
  r.text = j.at("text").get<std::string>();
  r.reason = static_cast<FinishReason>(j.at("reason").get<int>());
  r.prompt_tokens = j.at("prompt_tokens").get<int32_t>();
  const std::vector<double> m = j.at("metrics").get<std::vector<double>>();
  r.metrics = RequestMetrics{m.at(0), m.at(1), m.at(2), m.at(3), m.at(4)};
  return r;
}

// Messages between ranks of one build; a parse failure is a bug, reported as data loss.
absl::StatusOr<json> Parse(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError("malformed message between leaders");
  return j;
}

}  // namespace

absl::StatusOr<std::vector<Request>> DispatchRequests(RankRuntime& rt, std::vector<Request> all) {
  MpiCommunicator* leaders = rt.context->leaders();
  if (leaders == nullptr) return all;
  // Every group's KV capacity (blocks), then rank 0 routes and sends each leader its share.
  KVS_ASSIGN_OR_RETURN(std::vector<std::string> caps,
                       leaders->Gather(std::to_string(rt.engine->kv_capacity().blocks), 0));
  std::vector<std::string> parts;
  if (leaders->rank() == 0) {
    std::vector<int64_t> capacity;
    for (const std::string& c : caps) capacity.push_back(std::stoll(c));
    DpRouter router(capacity);
    std::vector<json> per_group(capacity.size(), json::array());
    const int64_t bs = rt.engine->kv_cache().block_size();
    for (const Request& r : all) {
      // Forks share the prompt's blocks but each grows its own output.
      const int64_t prompt_blocks = (static_cast<int64_t>(r.prompt_ids.size()) + bs - 1) / bs;
      const int64_t blocks = prompt_blocks + r.params.n * ((r.params.max_tokens + bs - 1) / bs);
      // The prompt's leading full blocks, chained as the prefix cache chains them.
      const std::vector<uint64_t> prefix = PrefixBlockHashes(r.prompt_ids, static_cast<int32_t>(bs), 0);
      per_group[router.Route(blocks, prefix)].push_back(ToJson(r));
    }
    std::fprintf(stderr, "%s router: %lld of %zu request(s) sent where their prefix went\n", rt.tag().c_str(),
                 static_cast<long long>(router.affinity_hits()), all.size());
    for (size_t g = 0; g < per_group.size(); ++g) {
      std::fprintf(stderr, "%s routed %zu request(s) to group %zu (KV capacity %s blocks)\n", rt.tag().c_str(),
                   per_group[g].size(), g, caps[g].c_str());
      parts.push_back(per_group[g].dump());
    }
  }
  KVS_ASSIGN_OR_RETURN(std::string mine, leaders->Scatter(parts, 0));
  KVS_ASSIGN_OR_RETURN(json j, Parse(mine));
  std::vector<Request> out;
  for (const json& r : j) out.push_back(RequestFromJson(r));
  return out;
}

absl::StatusOr<std::vector<RequestResult>> CollectResults(RankRuntime& rt, std::vector<RequestResult> mine) {
  MpiCommunicator* leaders = rt.context->leaders();
  if (leaders == nullptr) return mine;
  json j = json::array();
  for (const RequestResult& r : mine) j.push_back(ToJson(r));
  KVS_ASSIGN_OR_RETURN(std::vector<std::string> all,
                       leaders->Gather(j.dump(-1, ' ', false, json::error_handler_t::replace), 0));
  std::vector<RequestResult> out;
  for (const std::string& part : all) {
    KVS_ASSIGN_OR_RETURN(json p, Parse(part));
    for (const json& r : p) out.push_back(ResultFromJson(r));
  }
  return out;
}

}  // namespace kvs
