// How `generate` and `bench` start a rank: MPI when the job has several ranks, the backend on
// the local rank's GPU, this rank's shard of the model, and then either the engine (a TP
// group's leader) or a StepWorker (every other rank of the group).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/dp_router.h"
#include "parallel/mpi_session.h"
#include "parallel/rank_context.h"
#include "parallel/step_worker.h"
#include "parallel/world.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"

namespace kvs {

struct RankRuntime {
  // Declared first so it is destroyed last: MPI_Finalize after every communicator is freed.
  std::unique_ptr<MpiSession> mpi;
  World world;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LoadedModel> model;
  std::unique_ptr<RankContext> context;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Engine> engine;      // on TP-group leaders
  std::unique_ptr<StepWorker> worker;  // on the other ranks
  DpRouting dp_routing = DpRouting::kKvAware;  // how rank 0 spreads requests over the replicas
  double load_seconds = 0;

  // "[rank 3]": every log line says which rank speaks.
  std::string tag() const;
  bool multi_rank() const { return world.size > 1; }
};

// `adjust` may change the engine configuration from the flags once the model is known (bench
// sizes the context to its requests). Prints the sharding and KV capacity of every rank when
// the job has several.
absl::StatusOr<std::unique_ptr<RankRuntime>> StartRank(
    const std::string& model_path, const std::function<void(EngineConfig&, const ModelConfig&)>& adjust = {});

// Runs a StepWorker until its leader stops it; prints a line when --verbose.
absl::Status RunWorker(RankRuntime& rt);

// Reports a command's failure like ReportAndExit; on a multi-rank job it then ends every rank
// (MPI_Abort), so that no peer waits forever for this one. Call it while the RankRuntime is
// still alive: its destructor finalises MPI, which would wait for the failed peers.
int FinishRank(const char* command, const absl::Status& s);

}  // namespace kvs
