#include "parallel/mpi_communicator.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/common/status_macros.h"
#include "parallel/mpi_check.h"
#include "parallel/step_wire.h"

namespace kvs {

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::chrono::milliseconds timeout) : comm_(comm), timeout_(timeout) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  // Test hook, KVS_FAULT_AT=<world rank>:<step message>:exit|hang — that rank dies abruptly
  // (as a crashed or killed rank would) or stops responding at its N-th step message, to prove
  // the others stop instead of hanging.
  if (const char* spec = std::getenv("KVS_FAULT_AT")) {
    std::vector<std::string> parts = absl::StrSplit(spec, ':');
    int r = -1;
    int64_t n = -1;
    if (parts.size() == 3 && absl::SimpleAtoi(parts[0], &r) && absl::SimpleAtoi(parts[1], &n) &&
        (parts[2] == "exit" || parts[2] == "hang")) {
      fault_rank_ = r;
      fault_broadcast_ = n;
      fault_hang_ = parts[2] == "hang";
    }
  }
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

absl::Status MpiCommunicator::Wait(MPI_Request& request, const char* op, bool bounded) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (int spins = 0;; ++spins) {
    int done = 0;
    KVS_MPI_RETURN_IF_ERROR(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return absl::OkStatus();
    // Spin briefly (a step's collectives are microseconds apart), then yield the core: on an
    // oversubscribed CPU run the peer we wait for may need it.
    if (spins > 2000) std::this_thread::sleep_for(std::chrono::microseconds(spins > 100000 ? 500 : 20));
    if (bounded && std::chrono::steady_clock::now() > deadline) {
      MPI_Cancel(&request);
      return absl::DeadlineExceededError(absl::StrFormat(
          "rank %d: %s did not complete within %d s: a peer rank of this group (size %d) stopped or hangs", world_rank_,
          op, static_cast<int>(timeout_.count() / 1000), size_));
    }
  }
}

absl::Status MpiCommunicator::AllReduceSum(TensorView x) {
  if (x.dtype != DType::kF32) return absl::InvalidArgumentError("MPI all-reduce carries f32 tensors (the CPU backend)");
  if (!x.IsContiguous()) return absl::InvalidArgumentError("all-reduce needs a contiguous tensor");
  if (size_ == 1) return absl::OkStatus();
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Iallreduce(MPI_IN_PLACE, x.data, static_cast<int>(x.NumElements()), MPI_FLOAT, MPI_SUM,
                                         comm_, &req));
  return Wait(req, "all-reduce", true);
}

absl::Status MpiCommunicator::AllGather(const void* send, void* recv, size_t bytes) {
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Iallgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes),
                                         MPI_BYTE, comm_, &req));
  return Wait(req, "all-gather", true);
}

absl::Status MpiCommunicator::Broadcast(std::vector<int32_t>& words) {
  ++broadcasts_;
  if (world_rank_ == fault_rank_ && broadcasts_ == fault_broadcast_) {
    std::fprintf(stderr, "[rank %d] KVS_FAULT_AT: %s at step message %lld\n", world_rank_,
                 fault_hang_ ? "hanging" : "exiting abruptly", static_cast<long long>(broadcasts_));
    std::fflush(stderr);
    if (!fault_hang_) _exit(3);
    for (;;) pause();
  }
  int64_t n = static_cast<int64_t>(words.size());
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Ibcast(&n, 1, MPI_INT64_T, 0, comm_, &req));
  // Workers wait here between steps for as long as rank 0 is idle.
  KVS_RETURN_IF_ERROR(Wait(req, "step broadcast", false));
  if (rank_ != 0) words.resize(n);
  KVS_MPI_RETURN_IF_ERROR(MPI_Ibcast(words.data(), static_cast<int>(n), MPI_INT32_T, 0, comm_, &req));
  return Wait(req, "step broadcast", true);
}

absl::Status MpiCommunicator::SendStep(const StepInput* input, bool greedy_only) {
  if (input == nullptr) {
    EncodeStop(step_words_);
  } else {
    EncodeStep(*input, greedy_only, step_words_);
  }
  return Broadcast(step_words_);
}

absl::StatusOr<StepCommand> MpiCommunicator::ReceiveStep(StepInput& input, bool& greedy_only) {
  KVS_RETURN_IF_ERROR(Broadcast(step_words_));
  return DecodeStep(step_words_, input, greedy_only);
}

absl::StatusOr<int64_t> MpiCommunicator::AllReduceMin(int64_t value) {
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Iallreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MIN, comm_, &req));
  KVS_RETURN_IF_ERROR(Wait(req, "all-reduce (min)", true));
  return value;
}

absl::Status MpiCommunicator::Barrier() {
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Ibarrier(comm_, &req));
  return Wait(req, "barrier", true);
}

absl::Status MpiCommunicator::BroadcastBytes(void* data, size_t bytes, int root) {
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_, &req));
  return Wait(req, "broadcast", true);
}

absl::StatusOr<std::string> MpiCommunicator::Scatter(const std::vector<std::string>& parts, int root) {
  std::vector<int> sizes(size_), displs(size_);
  std::string flat;
  if (rank_ == root) {
    if (parts.size() != static_cast<size_t>(size_)) return absl::InvalidArgumentError("scatter needs one part per rank");
    for (int r = 0; r < size_; ++r) {
      sizes[r] = static_cast<int>(parts[r].size());
      displs[r] = static_cast<int>(flat.size());
      flat += parts[r];
    }
  }
  int mine = 0;
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Iscatter(sizes.data(), 1, MPI_INT, &mine, 1, MPI_INT, root, comm_, &req));
  KVS_RETURN_IF_ERROR(Wait(req, "scatter", false));
  std::string out(mine, '\0');
  KVS_MPI_RETURN_IF_ERROR(MPI_Iscatterv(flat.data(), sizes.data(), displs.data(), MPI_CHAR, out.data(), mine, MPI_CHAR,
                                        root, comm_, &req));
  KVS_RETURN_IF_ERROR(Wait(req, "scatter", true));
  return out;
}

absl::StatusOr<std::vector<std::string>> MpiCommunicator::Gather(const std::string& mine, int root) {
  std::vector<int> sizes(size_), displs(size_);
  int n = static_cast<int>(mine.size());
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Igather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm_, &req));
  KVS_RETURN_IF_ERROR(Wait(req, "gather", false));
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    displs[r] = total;
    total += sizes[r];
  }
  std::string flat(rank_ == root ? total : 0, '\0');
  KVS_MPI_RETURN_IF_ERROR(MPI_Igatherv(mine.data(), n, MPI_CHAR, flat.data(), sizes.data(), displs.data(), MPI_CHAR,
                                       root, comm_, &req));
  KVS_RETURN_IF_ERROR(Wait(req, "gather", true));
  std::vector<std::string> out;
  if (rank_ == root) {
    for (int r = 0; r < size_; ++r) out.push_back(flat.substr(displs[r], sizes[r]));
  }
  return out;
}

}  // namespace kvs

namespace kvs {

namespace {
constexpr int kMessageTag = 4242;  // point-to-point messages, apart from every collective
}  // namespace

absl::Status MpiCommunicator::ReapOutbox() {
  for (auto it = outbox_.begin(); it != outbox_.end();) {
    int done = 0;
    KVS_MPI_RETURN_IF_ERROR(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
    it = done ? outbox_.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::Post(int dest, std::string message) {
  KVS_RETURN_IF_ERROR(ReapOutbox());
  outbox_.push_back(Outgoing{std::move(message), MPI_REQUEST_NULL});
  Outgoing& out = outbox_.back();  // list nodes stay put: MPI reads the string until delivered
  KVS_MPI_RETURN_IF_ERROR(MPI_Isend(out.message.data(), static_cast<int>(out.message.size()), MPI_CHAR, dest, kMessageTag,
                                    comm_, &out.request));
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> MpiCommunicator::TryReceive(int source) {
  KVS_RETURN_IF_ERROR(ReapOutbox());
  int arrived = 0;
  MPI_Status status;
  KVS_MPI_RETURN_IF_ERROR(MPI_Iprobe(source, kMessageTag, comm_, &arrived, &status));
  if (!arrived) return std::nullopt;
  int bytes = 0;
  KVS_MPI_RETURN_IF_ERROR(MPI_Get_count(&status, MPI_CHAR, &bytes));
  std::string message(bytes, '\0');
  MPI_Request req;
  KVS_MPI_RETURN_IF_ERROR(MPI_Irecv(message.data(), bytes, MPI_CHAR, source, kMessageTag, comm_, &req));
  KVS_RETURN_IF_ERROR(Wait(req, "message receive", true));
  return message;
}

absl::Status MpiCommunicator::Flush() {
  for (Outgoing& out : outbox_) KVS_RETURN_IF_ERROR(Wait(out.request, "message send", true));
  outbox_.clear();
  return absl::OkStatus();
}

}  // namespace kvs
