// Collectives over NCCL on device memory, ordered on the CUDA backend's stream; the control
// plane (step messages, capacity agreement) rides on MPI. Bootstrapped over MPI: the group's
// rank 0 creates the ncclUniqueId and broadcasts it.
//
// NCCL errors that surface later (a peer gone, a network fault) are polled with
// ncclCommGetAsyncError at every call; on one, the communicator is aborted and the error
// names the rank.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_backend.h"
#include "parallel/mpi_communicator.h"

typedef struct ncclComm* ncclComm_t;

namespace kvs {

// The tensor collectives only; the group's control plane stays with the MPI communicator that
// bootstrapped it (GpuGroupCommunicator holds both).
class NcclCommunicator {
 public:
  // Collective over `control`'s group: every rank calls it. `control` outlives the communicator.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(MpiCommunicator& control, CudaBackend& backend);
  ~NcclCommunicator();

  int rank() const { return control_->rank(); }
  absl::Status AllReduceSum(TensorView x);
  absl::Status AllGather(const void* send, void* recv, size_t bytes);

 private:
  NcclCommunicator() = default;
  absl::Status CheckAsync();

  MpiCommunicator* control_ = nullptr;
  CudaBackend* backend_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace kvs
