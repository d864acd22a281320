// A tensor-parallel group of GPUs: the control plane over MPI, tensors over NCCL and/or kvshard's
// peer-memory collectives (peer_all_reduce.h), chosen by all_reduce_choice.h's rules. At start-up
// it learns where the group's GPUs are (nodes, shared GPUs, peer access), times both all-reduces at
// the step's message sizes when both can run, agrees on rank 0's choice and logs it with its
// reason. NCCL is skipped when two ranks share a GPU (NCCL refuses that); the peer path then
// carries everything, which is how one GPU tests the whole tensor-parallel path.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/all_reduce_choice.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/peer_all_reduce.h"
#include "runtime/engine/collectives.h"

namespace kvs {

class GpuGroupCommunicator final : public Collectives {
 public:
  // Collective over `control`'s group. `hidden` sizes the timed messages (hidden x {1, 8, 32,
  // 128, 512} bf16 values: a decode step's to a prefill chunk's all-reduces).
  static absl::StatusOr<std::unique_ptr<GpuGroupCommunicator>> Create(std::unique_ptr<MpiCommunicator> control,
                                                                      Backend& backend, AllReduceMode mode,
                                                                      std::chrono::milliseconds timeout,
                                                                      int64_t hidden);

  int rank() const override { return control_->rank(); }
  int size() const override { return control_->size(); }
  absl::Status AllReduceSum(TensorView x) override;
  absl::StatusOr<bool> AllReduceAddRmsNorm(TensorView x, TensorView residual, TensorView weight, float eps,
                                           TensorView out) override;
  absl::Status AllGather(const void* send, void* recv, size_t bytes) override;
  bool Capturable() const override { return true; }  // both paths are stream work
  absl::Status SendStep(const StepInput* input, bool greedy_only) override {
    return control_->SendStep(input, greedy_only);
  }
  absl::StatusOr<StepCommand> ReceiveStep(StepInput& input, bool& greedy_only) override {
    return control_->ReceiveStep(input, greedy_only);
  }
  absl::StatusOr<int64_t> AllReduceMin(int64_t value) override { return control_->AllReduceMin(value); }

  // `bench --kernel all-reduce`: both all-reduces timed at each of `bytes` (bf16 messages) over
  // `control`'s group, `iters` calls each; nccl_us < 0 where NCCL cannot run (ranks sharing a GPU),
  // custom_us < 0 where the peer path cannot (the error says why when neither can).
  static absl::StatusOr<std::vector<AllReduceTiming>> TimeAllReduces(MpiCommunicator& control, Backend& backend,
                                                                     const std::vector<size_t>& bytes, int iters,
                                                                     std::chrono::milliseconds timeout);

  // "nccl", "peer" or "nccl+peer", and the sentence the start-up log printed.
  const char* transport() const;
  const std::string& reason() const { return choice_.reason; }

 private:
  GpuGroupCommunicator() = default;
  std::unique_ptr<MpiCommunicator> control_;
  cudaStream_t stream_ = nullptr;  // the backend's ops' stream
  std::unique_ptr<NcclCommunicator> nccl_;
  std::unique_ptr<PeerAllReduce> peer_;
  AllReduceChoice choice_;
};

}  // namespace kvs
