// What one rank's forward pass and engine need from the other ranks of its tensor-parallel
// group. parallel/ implements it over MPI (tensors in host memory: the CPU backend) or NCCL
// (tensors in device memory, on the backend's stream: the CUDA backend); the runtime never
// sees either library. Every rank of a group makes the same calls in the same order.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"
#include "runtime/model/model_shard.h"
#include "runtime/sched/step_input.h"

namespace kvs {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;  // within the group; rank 0 coordinates
  virtual int size() const = 0;

  // --- tensors in backend memory, ordered with the backend's work ---
  // x = sum over the group of every rank's x. x contiguous, f32 or the compute dtype.
  virtual absl::Status AllReduceSum(TensorView x) = 0;
  // The row-parallel output's all-reduce fused with the residual add and the next RMSNorm:
  // residual += the group's sum of x; out = RmsNorm(residual) * weight. False (nothing done) where
  // the transport has no fused kernel for these tensors: the caller then runs AllReduceSum and
  // Backend::AddRmsNorm, which give the same residual.
  virtual absl::StatusOr<bool> AllReduceAddRmsNorm(TensorView x, TensorView residual, TensorView weight, float eps,
                                                   TensorView out) {
    return false;
  }
  // recv[r * bytes, (r + 1) * bytes) = rank r's send[0, bytes), on every rank.
  virtual absl::Status AllGather(const void* send, void* recv, size_t bytes) = 0;
  // Whether those two may be recorded with the backend's ops (Backend::Record) and replayed:
  // true for NCCL (enqueued on the stream), false for MPI (the host waits inside the call).
  virtual bool Capturable() const { return false; }

  // --- control plane, host memory ---
  // Rank 0: sends the group's other ranks the step it is about to run (`input`), or, with a null
  // `input`, tells them to stop. The encoding is parallel's (parallel/step_wire.h).
  virtual absl::Status SendStep(const StepInput* input, bool greedy_only) = 0;
  // The other ranks: rank 0's next message; `input` and `greedy_only` are set for kRun.
  virtual absl::StatusOr<StepCommand> ReceiveStep(StepInput& input, bool& greedy_only) = 0;
  // The minimum of `value` over the group.
  virtual absl::StatusOr<int64_t> AllReduceMin(int64_t value) = 0;
};

// A rank's place in its tensor-parallel group, as the runtime needs it.
struct TensorParallel {
  Collectives* comm = nullptr;       // null: tp = 1
  std::vector<Range> vocab_by_rank;  // every rank's LM-head rows, to reassemble full logits
  int size() const { return comm == nullptr ? 1 : comm->size(); }
  int rank() const { return comm == nullptr ? 0 : comm->rank(); }
};

}  // namespace kvs
