// main() of the GoogleTest binaries that run under mpirun: MPI started from the launcher's
// environment, only rank 0 printing, and every rank's failures failing the job's exit code.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_session.h"
#include "parallel/world.h"

namespace kvs::testing {

// A communicator over the whole job (a duplicate of MPI_COMM_WORLD), with `timeout` on its waits.
inline std::unique_ptr<MpiCommunicator> WorldCommunicator(std::chrono::milliseconds timeout) {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  return std::make_unique<MpiCommunicator>(dup, timeout);
}

inline int RunMpiTests(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto world = DetectWorld();
  if (!world.ok()) return 2;
  auto session = MpiSession::Start(*world);
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", std::string(session.status().message()).c_str());
    return 2;
  }
  if (world->rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

}  // namespace kvs::testing
