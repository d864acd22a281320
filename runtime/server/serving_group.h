// Where the server's requests run. Group 0 is the engine of this process (LocalGroup); with data
// parallelism (world = dp x tp) the other tensor-parallel groups are reached through their
// leaders (parallel/dp_serving.h). EngineService drives every group from its one thread.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/engine/engine.h"

namespace kvs {

// A group's scheduler and KV figures, for /metrics.
struct GroupStats {
  int32_t running = 0, waiting = 0, swapped = 0;
  int32_t kv_used = 0, kv_total = 0, block_size = kDefaultBlockSize;
  int32_t offload_used = 0;  // blocks held in the offload tier (host memory read in place)
  int64_t offload_staged = 0;  // offload blocks staged to the device window for prefill so far
  int64_t kv_tokens = 0;  // tokens stored in the used blocks
  int64_t preemptions = 0, prefix_hits = 0, prefix_host_hits = 0, prefix_queries = 0;
};

// What a group produced since the last Advance.
struct GroupOutput {
  std::vector<TokenEvent> events;
  std::vector<RequestResult> results;                        // finished requests' metrics
  std::vector<std::pair<std::string, absl::Status>> refused;  // requests the group could not take
};

class ServingGroup {
 public:
  virtual ~ServingGroup() = default;
  // Starts `r`. A local group refuses at once (the error); a remote one reports it later in
  // GroupOutput::refused.
  virtual absl::Status Add(Request r) = 0;
  virtual void Abort(const std::string& id) = 0;
  // Whether Advance has work to do now: a local engine with requests, a remote group with
  // requests in flight.
  virtual bool Busy() const = 0;
  // Runs a step (local) or collects what the group sent (remote), without blocking.
  virtual absl::Status Advance(GroupOutput& out) = 0;
  virtual GroupStats Stats() const = 0;
  // After the last request: releases the group's ranks.
  virtual absl::Status Stop() = 0;
};

// Chooses the group for each new request and hears when it is done (data-parallel routing);
// without one, everything goes to group 0.
class RequestRouter {
 public:
  virtual ~RequestRouter() = default;
  virtual int Route(const Request& r) = 0;
  virtual void Done(int group, const std::string& id) = 0;
};

// This process's engine as a group.
class LocalGroup final : public ServingGroup {
 public:
  explicit LocalGroup(Engine& engine) : engine_(engine) {}
  absl::Status Add(Request r) override { return engine_.Add(std::move(r)); }
  void Abort(const std::string& id) override { engine_.Abort(id); }
  bool Busy() const override { return engine_.HasWork(); }
  absl::Status Advance(GroupOutput& out) override;
  GroupStats Stats() const override;
  absl::Status Stop() override { return engine_.Shutdown(); }

 private:
  Engine& engine_;
};

// The scheduler figures of `engine`, as a group reports them.
GroupStats StatsOf(const Engine& engine);

}  // namespace kvs
