// Offline data parallelism: global rank 0 routes a batch of requests across the TP groups'
// leaders (parallel/dp_router: the most free KV capacity wins) and collects their results, so
// that `generate` gives the same output file whatever dp is.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "launcher/rank_setup.h"
#include "runtime/engine/engine.h"

namespace kvs {

// On global rank 0, `all` is the whole batch; every leader gets back the requests routed to
// its group. Without data parallelism, `all` comes straight back. Leaders only.
absl::StatusOr<std::vector<Request>> DispatchRequests(RankRuntime& rt, std::vector<Request> all);
// Every leader's results, on global rank 0 (empty elsewhere). Leaders only.
absl::StatusOr<std::vector<RequestResult>> CollectResults(RankRuntime& rt, std::vector<RequestResult> mine);

}  // namespace kvs
