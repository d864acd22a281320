// Collectives over NCCL on device memory, ordered on the CUDA backend's stream; the control
// plane (step messages, capacity agreement) rides on MPI. Bootstrapped over MPI: the group's
// rank 0 creates the ncclUniqueId and broadcasts it.
//
// NCCL errors that surface later (a peer gone, a network fault) are polled with
// ncclCommGetAsyncError at every call; on one, the communicator is aborted and the error
// names the rank.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/mpi_communicator.h"

typedef struct ncclComm* ncclComm_t;

namespace kvs {

// The CUDA stream of `backend`'s ops (Backend::NativeStream), which NCCL and the peer kernels join;
// null for a backend without one (the CPU's).
inline cudaStream_t StreamOf(const Backend& backend) { return static_cast<cudaStream_t>(backend.NativeStream()); }

// The tensor collectives only; the group's control plane stays with the MPI communicator that
// bootstrapped it (GpuGroupCommunicator holds both).
class NcclCommunicator {
 public:
  // Collective over `control`'s group: every rank calls it. `control` outlives the communicator.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(MpiCommunicator& control, Backend& backend);
  ~NcclCommunicator();

  int rank() const { return control_->rank(); }
  absl::Status AllReduceSum(TensorView x);
  absl::Status AllGather(const void* send, void* recv, size_t bytes);

 private:
  NcclCommunicator() = default;
  absl::Status CheckAsync();

  MpiCommunicator* control_ = nullptr;
  cudaStream_t stream_ = nullptr;  // the backend's
  ncclComm_t comm_ = nullptr;
};

}  // namespace kvs
