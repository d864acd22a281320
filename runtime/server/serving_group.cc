#include "runtime/server/serving_group.h"

#include "kernels/common/status_macros.h"

namespace kvs {

absl::Status LocalGroup::Advance(GroupOutput& out) {
  if (!engine_.HasWork()) return absl::OkStatus();
  KVS_ASSIGN_OR_RETURN(std::vector<TokenEvent> events, engine_.Step());
  for (TokenEvent& e : events) out.events.push_back(std::move(e));
  for (RequestResult& r : engine_.TakeResults()) out.results.push_back(std::move(r));
  return absl::OkStatus();
}

GroupStats LocalGroup::Stats() const { return StatsOf(engine_); }

GroupStats StatsOf(const Engine& engine) {
  const Scheduler& s = engine.scheduler();
  GroupStats g;
  g.running = s.num_running();
  g.waiting = s.num_waiting();
  g.swapped = s.num_swapped();
  g.kv_total = s.pool().num_blocks();
  g.kv_used = s.pool().num_blocks() - s.pool().num_free();
  g.block_size = engine.kv_cache().block_size();
  g.kv_tokens = s.TokensInCache();
  g.offload_used = s.offload_blocks_held();
  g.offload_staged = engine.offload_staged_blocks();
  g.preemptions = s.num_preemptions();
  g.prefix_hits = s.prefix_hit_tokens();
  g.prefix_host_hits = s.host_prefix_hit_tokens();
  g.prefix_queries = s.prefix_query_tokens();
  return g;
}

}  // namespace kvs
