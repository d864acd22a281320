#include "launcher/dp_dispatch.h"

#include <cstdio>

#include "kernels/common/status_macros.h"
#include "launcher/dp_messages.h"
#include "parallel/dp_router.h"
#include "runtime/kv/block_hash.h"

namespace kvs {

using nlohmann::json;

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
      per_group[router.Route(blocks, prefix)].push_back(RequestToJson(r));
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
  KVS_ASSIGN_OR_RETURN(json j, ParseMessage(mine));
  std::vector<Request> out;
  for (const json& r : j) out.push_back(RequestFromJson(r));
  return out;
}

absl::StatusOr<std::vector<RequestResult>> CollectResults(RankRuntime& rt, std::vector<RequestResult> mine) {
  MpiCommunicator* leaders = rt.context->leaders();
  if (leaders == nullptr) return mine;
  json j = json::array();
  for (const RequestResult& r : mine) j.push_back(ResultToJson(r));
  KVS_ASSIGN_OR_RETURN(std::vector<std::string> all,
                       leaders->Gather(j.dump(-1, ' ', false, json::error_handler_t::replace), 0));
  std::vector<RequestResult> out;
  for (const std::string& part : all) {
    KVS_ASSIGN_OR_RETURN(json p, ParseMessage(part));
    for (const json& r : p) out.push_back(ResultFromJson(r));
  }
  return out;
}

}  // namespace kvs
