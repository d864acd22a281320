#include "parallel/dp_serving.h"

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "kernels/common/status_macros.h"
#include "parallel/dp_messages.h"
#include "parallel/dp_router.h"
#include "runtime/kv/block_hash.h"

namespace kvs {
namespace {

using nlohmann::json;

json StatsToJson(const GroupStats& g) {
  return json{g.running,        g.waiting,      g.swapped,       g.kv_used,     g.kv_total,
              g.block_size,     g.kv_tokens,    g.preemptions,   g.prefix_hits, g.prefix_host_hits,
              g.prefix_queries, g.offload_used, g.offload_staged};
}

GroupStats StatsFromJson(const json& j) {
  GroupStats g;
  g.running = j.at(0).get<int32_t>();
  g.waiting = j.at(1).get<int32_t>();
  g.swapped = j.at(2).get<int32_t>();
  g.kv_used = j.at(3).get<int32_t>();
  g.kv_total = j.at(4).get<int32_t>();
  g.block_size = j.at(5).get<int32_t>();
  g.kv_tokens = j.at(6).get<int64_t>();
  g.preemptions = j.at(7).get<int64_t>();
  g.prefix_hits = j.at(8).get<int64_t>();
  g.prefix_host_hits = j.at(9).get<int64_t>();
  g.prefix_queries = j.at(10).get<int64_t>();
  g.offload_used = j.at(11).get<int32_t>();
  g.offload_staged = j.at(12).get<int64_t>();
  return g;
}

// Rank 0's view of another group: requests go out as messages, events come back as messages.
class RemoteGroup final : public ServingGroup {
 public:
  RemoteGroup(MpiCommunicator& leaders, int rank) : leaders_(leaders), rank_(rank) {}

  absl::Status Add(Request r) override {
    samples_left_[r.id] = r.params.n;
    return leaders_.Post(rank_, DumpMessage(json{{"op", "add"}, {"request", RequestToJson(r)}}));
  }
  void Abort(const std::string& id) override {
    samples_left_.erase(id);
    ++aborts_unconfirmed_;  // keep polling until the group confirms (its blocks are then free)
    const absl::Status s = leaders_.Post(rank_, DumpMessage(json{{"op", "abort"}, {"id", id}}));
    if (!s.ok())
      std::fprintf(stderr, "[rank 0] could not tell group %d to abort '%s': %s\n", rank_, id.c_str(),
                   s.ToString().c_str());
  }
  // Also while its last stats show work: an abort's blocks come free a step after its
  // confirmation, and that report must still be read.
  bool Busy() const override {
    return !samples_left_.empty() || aborts_unconfirmed_ > 0 || stats_.running + stats_.waiting + stats_.swapped > 0;
  }

  absl::Status Advance(GroupOutput& out) override {
    for (;;) {
      KVS_ASSIGN_OR_RETURN(std::optional<std::string> text, leaders_.TryReceive(rank_));
      if (!text) return absl::OkStatus();
      KVS_ASSIGN_OR_RETURN(json m, ParseMessage(*text));
      for (const json& r : m.at("refused")) {
        const std::string id = r.at(0).get<std::string>();
        samples_left_.erase(id);
        out.refused.emplace_back(id, absl::InvalidArgumentError(r.at(1).get<std::string>()));
      }
      for (const json& e : m.at("events")) {
        TokenEvent ev = EventFromJson(e);
        if (ev.finished) {
          if (auto it = samples_left_.find(ev.request_id); it != samples_left_.end() && --it->second == 0)
            samples_left_.erase(it);
        }
        out.events.push_back(std::move(ev));
      }
      for (const json& r : m.at("results")) out.results.push_back(ResultFromJson(r));
      aborts_unconfirmed_ -= m.at("aborted").get<int32_t>();
      stats_ = StatsFromJson(m.at("stats"));
    }
  }

  GroupStats Stats() const override { return stats_; }

  absl::Status Stop() override {
    KVS_RETURN_IF_ERROR(leaders_.Post(rank_, DumpMessage(json{{"op", "stop"}})));
    return leaders_.Flush();
  }

 private:
  MpiCommunicator& leaders_;
  int rank_;
  absl::flat_hash_map<std::string, int32_t> samples_left_;  // requests in flight there
  int32_t aborts_unconfirmed_ = 0;
  GroupStats stats_;
};

// DpRouter over requests: charges each the blocks it can occupy, gives them back when it ends.
class DpRequestRouter final : public RequestRouter {
 public:
  DpRequestRouter(std::vector<int64_t> capacities, int32_t block_size, DpRouting routing)
      : router_(std::move(capacities), routing), block_size_(block_size) {}

  int Route(const Request& r) override {
    const int64_t bs = block_size_;
    const int64_t prompt_blocks = (static_cast<int64_t>(r.prompt_ids.size()) + bs - 1) / bs;
    const int64_t blocks = prompt_blocks + r.params.n * ((r.params.max_tokens + bs - 1) / bs);
    const int g = router_.Route(blocks, PrefixBlockHashes(r.prompt_ids, block_size_, 0));
    charged_[r.id] = {g, blocks};
    return g;
  }
  void Done(int group, const std::string& id) override {
    auto it = charged_.find(id);
    if (it == charged_.end()) return;
    router_.Release(it->second.first, it->second.second);
    charged_.erase(it);
  }

 private:
  DpRouter router_;
  int32_t block_size_;
  absl::flat_hash_map<std::string, std::pair<int, int64_t>> charged_;
};

}  // namespace

absl::StatusOr<std::vector<int64_t>> GatherGroupCapacities(MpiCommunicator* leaders, const Engine& engine) {
  if (leaders == nullptr) return std::vector<int64_t>{engine.kv_capacity().blocks};
  KVS_ASSIGN_OR_RETURN(std::vector<std::string> caps, leaders->Gather(std::to_string(engine.kv_capacity().blocks), 0));
  std::vector<int64_t> out;
  for (const std::string& c : caps) out.push_back(std::stoll(c));
  return out;
}

std::vector<std::unique_ptr<ServingGroup>> ConnectRemoteGroups(MpiCommunicator* leaders) {
  std::vector<std::unique_ptr<ServingGroup>> groups;
  if (leaders == nullptr) return groups;
  for (int g = 1; g < leaders->size(); ++g) groups.push_back(std::make_unique<RemoteGroup>(*leaders, g));
  return groups;
}

std::unique_ptr<RequestRouter> MakeDpRouter(std::vector<int64_t> capacities, int32_t block_size, DpRouting routing) {
  return std::make_unique<DpRequestRouter>(std::move(capacities), block_size, routing);
}

absl::Status ServeAsRemoteGroup(MpiCommunicator& leaders, Engine& engine, const std::string& tag) {
  std::fprintf(stderr, "%s serving group %d for rank 0\n", tag.c_str(), leaders.rank());
  bool stop = false;
  json last_stats;  // what rank 0 last heard
  while (!stop) {
    json refused = json::array(), events = json::array(), results = json::array();
    int32_t aborted = 0;
    for (;;) {
      KVS_ASSIGN_OR_RETURN(std::optional<std::string> text, leaders.TryReceive(0));
      if (!text) break;
      KVS_ASSIGN_OR_RETURN(json m, ParseMessage(*text));
      const std::string op = m.at("op").get<std::string>();
      if (op == "add") {
        Request r = RequestFromJson(m.at("request"));
        const std::string id = r.id;
        if (absl::Status s = engine.Add(std::move(r)); !s.ok()) refused.push_back({id, std::string(s.message())});
      } else if (op == "abort") {
        engine.Abort(m.at("id").get<std::string>());
        ++aborted;  // confirmed in the next message, with the freed blocks in its stats
      } else if (op == "stop") {
        stop = true;  // rank 0 sends it once every request it sent here has finished
      }
    }
    if (engine.HasWork()) {
      KVS_ASSIGN_OR_RETURN(std::vector<TokenEvent> step, engine.Step());
      for (const TokenEvent& e : step) events.push_back(EventToJson(e));
      for (const RequestResult& r : engine.TakeResults()) results.push_back(ResultToJson(r));
    }
    // Stats go out whenever they changed, even from a step with nothing else to say: an abort
    // takes effect in the step after it arrives, and that step's freed blocks (and the group's
    // idleness) must reach rank 0's metrics and router, or they would show the request forever.
    json stats = StatsToJson(StatsOf(engine));
    if (!refused.empty() || !events.empty() || !results.empty() || aborted > 0 || stats != last_stats) {
      json m{{"refused", refused}, {"events", events}, {"results", results}, {"aborted", aborted}, {"stats", stats}};
      KVS_RETURN_IF_ERROR(leaders.Post(0, DumpMessage(m)));
      last_stats = std::move(stats);
    } else if (!engine.HasWork()) {
      std::this_thread::sleep_for(std::chrono::microseconds(500));  // idle: poll, not spin
    }
  }
  KVS_RETURN_IF_ERROR(leaders.Flush());
  std::fprintf(stderr, "%s group %d stopped\n", tag.c_str(), leaders.rank());
  return engine.Shutdown();
}

}  // namespace kvs
