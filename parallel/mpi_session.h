// MPI's lifetime in a kvshard process. MPI starts only for a multi-rank run (a single process
// needs no MPI, and starting it outside mpirun/srun is slow or fails in containers); errors come
// back as Status instead of aborting, so a rank can report what went wrong before the job ends.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/world.h"

namespace kvs {

class MpiSession {
 public:
  // Initialises MPI and checks that its view of the world matches `expected` (what the
  // launcher's environment said).
  static absl::StatusOr<std::unique_ptr<MpiSession>> Start(const World& expected);
  ~MpiSession();  // MPI_Finalize
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  MpiSession() = default;
};

// Ends every rank of the job with `code` (MPI_Abort) when MPI is running; a no-op otherwise.
// Called when a rank fails, so that its peers stop instead of waiting for it forever.
void AbortAllRanks(int code);

}  // namespace kvs
