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

class NcclCommunicator final : public Collectives {
 public:
  // Collective over `control`'s group: every rank calls it.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(std::unique_ptr<MpiCommunicator> control,
                                                                  CudaBackend& backend);
  ~NcclCommunicator() override;

  int rank() const override { return control_->rank(); }
  int size() const override { return control_->size(); }
  absl::Status AllReduceSum(TensorView x) override;
  absl::Status AllGather(const void* send, void* recv, size_t bytes) override;
  bool Capturable() const override { return true; }  // NCCL collectives are stream work
  absl::Status Broadcast(std::vector<int32_t>& words) override { return control_->Broadcast(words); }
  absl::StatusOr<int64_t> AllReduceMin(int64_t value) override { return control_->AllReduceMin(value); }

 private:
  NcclCommunicator() = default;
  absl::Status CheckAsync();

  std::unique_ptr<MpiCommunicator> control_;
  CudaBackend* backend_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace kvs
