#include "parallel/mpi_session.h"

#include <mpi.h>

#include "absl/strings/str_format.h"
#include "parallel/mpi_check.h"

namespace kvs {

absl::StatusOr<std::unique_ptr<MpiSession>> MpiSession::Start(const World& expected) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return absl::FailedPreconditionError("MPI is already initialised in this process");
  int provided = 0;
  // Only the main thread calls MPI.
  KVS_MPI_RETURN_IF_ERROR(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  std::unique_ptr<MpiSession> s(new MpiSession());
  KVS_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  int rank = 0, size = 0;
  KVS_MPI_RETURN_IF_ERROR(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  KVS_MPI_RETURN_IF_ERROR(MPI_Comm_size(MPI_COMM_WORLD, &size));
  if (rank != expected.rank || size != expected.size) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "MPI says rank %d of %d but the %s environment says rank %d of %d: was kvshard started by a different "
        "launcher than the MPI it was built with?",
        rank, size, expected.launcher, expected.rank, expected.size));
  }
  return s;
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void AbortAllRanks(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace kvs
