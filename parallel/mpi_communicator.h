// Collectives over MPI on host memory: the CPU backend's tensors, and every group's control
// plane (step messages, capacity agreement) whatever the backend.
//
// Every call is non-blocking underneath and polled against a deadline, so a peer that hangs
// turns into a DeadlineExceeded error naming the operation instead of a silent hang (a peer
// that dies is reported by mpirun/srun, which then stop the job). Waiting for the next step
// message has no deadline: an idle server is not a failure.
#pragma once

#include <mpi.h>

#include <chrono>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/engine/collectives.h"

namespace kvs {

class MpiCommunicator final : public Collectives {
 public:
  // Takes ownership of `comm` (freed on destruction). `timeout` bounds every collective except
  // waiting for a step message.
  MpiCommunicator(MPI_Comm comm, std::chrono::milliseconds timeout);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(TensorView x) override;
  absl::Status AllGather(const void* send, void* recv, size_t bytes) override;
  absl::Status SendStep(const StepInput* input, bool greedy_only) override;
  absl::StatusOr<StepCommand> ReceiveStep(StepInput& input, bool& greedy_only) override;
  absl::StatusOr<int64_t> AllReduceMin(int64_t value) override;

  // Host-memory helpers for other parallel/ code.
  // Every rank's `words` become rank 0's (receivers are resized). Waiting for the size has no
  // deadline (workers wait here between steps for as long as rank 0 is idle).
  absl::Status Broadcast(std::vector<int32_t>& words);
  absl::Status Barrier();
  absl::Status BroadcastBytes(void* data, size_t bytes, int root);
  // `root` sends parts[r] to rank r (parts is read on root only); returns this rank's part.
  absl::StatusOr<std::string> Scatter(const std::vector<std::string>& parts, int root);
  // Every rank's `mine`, in rank order, on `root` (empty elsewhere). No deadline: peers may
  // still be working on what they were given.
  absl::StatusOr<std::vector<std::string>> Gather(const std::string& mine, int root);

  // Point-to-point messages (the data-parallel server's requests and token events): Post sends
  // without waiting (the message is kept until delivered); TryReceive returns the next message
  // from `source` if one has arrived. Messages from one source arrive in the order posted.
  absl::Status Post(int dest, std::string message);
  absl::StatusOr<std::optional<std::string>> TryReceive(int source);
  // Waits (bounded) until every posted message has been delivered.
  absl::Status Flush();
  MPI_Comm comm() const { return comm_; }

 private:
  // Polls `request` until done; past the deadline (when `bounded`) an error naming `op`.
  absl::Status Wait(MPI_Request& request, const char* op, bool bounded);

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  std::chrono::milliseconds timeout_;
  int64_t broadcasts_ = 0;
  std::vector<int32_t> step_words_;  // SendStep / ReceiveStep's message
  // Posted messages not yet known to be delivered, with their requests; polled by Post/Flush.
  struct Outgoing {
    std::string message;
    MPI_Request request;
  };
  std::list<Outgoing> outbox_;
  absl::Status ReapOutbox();
  int fault_rank_ = -1;  // KVS_FAULT_AT (tests): which rank fails, at which step message, how
  int64_t fault_broadcast_ = -1;
  bool fault_hang_ = false;
};

}  // namespace kvs
