// Data-parallel serving (world = dp x tp): global rank 0 answers HTTP and runs group 0; every
// other group's leader runs ServeAsRemoteGroup, taking requests from rank 0 over MPI and sending
// back its token events after each step. Rank 0 routes each request (parallel/dp_router.h: the
// group that already holds its prefix, else the one with the most free KV capacity).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/dp_router.h"
#include "parallel/mpi_communicator.h"
#include "runtime/engine/engine.h"
#include "runtime/server/serving_group.h"

namespace kvs {

// `leaders`: the communicator of the groups' leaders (RankContext::leaders), null with one group.
// Every leader (collective): the groups' KV capacities in blocks, in group order, on rank 0.
absl::StatusOr<std::vector<int64_t>> GatherGroupCapacities(MpiCommunicator* leaders, const Engine& engine);
// Rank 0: groups 1 .. dp-1 as ServingGroups.
std::vector<std::unique_ptr<ServingGroup>> ConnectRemoteGroups(MpiCommunicator* leaders);
// Rank 0: the router over every group, starting from their capacities (parallel/dp_router.h).
std::unique_ptr<RequestRouter> MakeDpRouter(std::vector<int64_t> capacities, int32_t block_size, DpRouting routing);
// The other leaders: serve until rank 0 sends stop, then release this group's workers.
// `tag` starts its log lines ("[rank 3]").
absl::Status ServeAsRemoteGroup(MpiCommunicator& leaders, Engine& engine, const std::string& tag);

}  // namespace kvs
