// Where this process sits among its peers: rank, size and local rank, read from the launcher's
// environment (Open MPI's mpirun, Slurm's srun, PMIx) or a single process. A value type with no
// MPI dependency, so topology arithmetic is testable anywhere.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kvs {

struct World {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  std::string launcher = "single";  // "mpirun", "srun", "pmix" or "single"
};

// Reads OMPI_COMM_WORLD_*, then SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, then PMIX_RANK.
// `getenv` is injectable for tests. Inconsistent values (rank >= size) are an error.
absl::StatusOr<World> DetectWorld(const char* (*getenv)(const char*) = nullptr);

}  // namespace kvs
