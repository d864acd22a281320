// kvshard's own all-reduce and all-gather for the GPUs of one node: each rank maps every peer's
// buffer through CUDA IPC (handles exchanged once over the MPI bootstrap) and the kernels of
// peer_all_reduce_kernels.cuh move and sum the data themselves, synchronised by flags in peer
// memory — no host round trip, capturable in CUDA graphs, and working where NCCL refuses to
// (two ranks on one GPU). Small messages go one-shot (every rank reads every peer's input and
// sums it), larger ones two-shot (reduce-scatter, then all-gather), in chunks of the staging area.
// Never NVLink multicast.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"
#include "parallel/mpi_communicator.h"
#include "parallel/peer_all_reduce_kernels.cuh"

namespace kvs {

class PeerAllReduce {
 public:
  // Bytes a call moves at a time; larger messages run as several calls.
  static constexpr size_t kStagingBytes = size_t{8} << 20;
  // One-shot up to this many bytes, two-shot above (one-shot reads every peer's whole message).
  static constexpr size_t kOneShotMaxBytes = size_t{512} << 10;

  // Collective over `control`'s group, on the current CUDA device. `timeout` bounds every wait
  // for a peer inside the kernels.
  static absl::StatusOr<std::unique_ptr<PeerAllReduce>> Create(MpiCommunicator& control, std::chrono::milliseconds timeout);
  ~PeerAllReduce();
  PeerAllReduce(const PeerAllReduce&) = delete;
  PeerAllReduce& operator=(const PeerAllReduce&) = delete;

  // x = the sum of every rank's x (bf16 or f32, contiguous, device memory), on `stream`.
  absl::Status AllReduceSum(TensorView x, cudaStream_t stream);
  // Whether AllReduceAddRmsNorm takes these tensors (one-shot size, bf16, aligned rows); the
  // caller runs AllReduceSum and the backend's AddRmsNorm otherwise.
  static bool FusesNorm(TensorView x, TensorView residual, TensorView weight, TensorView out);
  // residual += the group's sum of x (as AllReduceSum leaves it, bf16); out = RMSNorm(residual) *
  // weight (peer_all_reduce_kernels.cuh). FusesNorm must hold.
  absl::Status AllReduceAddRmsNorm(TensorView x, TensorView residual, TensorView weight, float eps, TensorView out,
                                   cudaStream_t stream);
  // recv[r * bytes, (r + 1) * bytes) = rank r's send[0, bytes), on `stream`.
  absl::Status AllGather(const void* send, void* recv, size_t bytes, cudaStream_t stream);
  // A wait inside an earlier collective that timed out: an error naming the rank waited for.
  absl::Status CheckError() const;

 private:
  PeerAllReduce() = default;
  peer::Peers peers_{};
  peer::Control control_{};
  int32_t* error_host_ = nullptr;  // control_.error, as the host reads it
  void* mine_ = nullptr;           // this rank's buffer: flags, staging, results
  std::vector<void*> opened_;      // the peers' buffers, mapped
  std::chrono::milliseconds timeout_{0};
};

}  // namespace kvs
