#include "parallel/nccl_communicator.h"

#include <nccl.h>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

#define KVS_NCCL_RETURN_IF_ERROR(call)                                                                      \
  do {                                                                                                      \
    const ncclResult_t kvs_nccl_rc_ = (call);                                                               \
    if (kvs_nccl_rc_ != ncclSuccess) {                                                                      \
      return absl::InternalError(absl::StrFormat("%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call,   \
                                                 ncclGetErrorString(kvs_nccl_rc_), ncclGetLastError(nullptr))); \
    }                                                                                                       \
  } while (0)

namespace kvs {

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(MpiCommunicator& control, Backend& backend) {
  if (StreamOf(backend) == nullptr) return absl::InvalidArgumentError("NCCL collectives need a CUDA backend");
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->stream_ = StreamOf(backend);
  c->control_ = &control;
  ncclUniqueId id;
  if (control.rank() == 0) KVS_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
  KVS_RETURN_IF_ERROR(control.BroadcastBytes(&id, sizeof(id), 0));
  KVS_NCCL_RETURN_IF_ERROR(ncclCommInitRank(&c->comm_, control.size(), id, control.rank()));
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

absl::Status NcclCommunicator::CheckAsync() {
  ncclResult_t async = ncclSuccess;
  KVS_NCCL_RETURN_IF_ERROR(ncclCommGetAsyncError(comm_, &async));
  if (async != ncclSuccess) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    return absl::UnavailableError(absl::StrFormat("rank %d: NCCL reported an asynchronous error: %s", rank(),
                                                  ncclGetErrorString(async)));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSum(TensorView x) {
  if (comm_ == nullptr) return absl::FailedPreconditionError("the NCCL communicator was aborted");
  if (!x.IsContiguous()) return absl::InvalidArgumentError("all-reduce needs a contiguous tensor");
  ncclDataType_t type;
  switch (x.dtype) {
    case DType::kF32: type = ncclFloat32; break;
    case DType::kBF16: type = ncclBfloat16; break;
    case DType::kF16: type = ncclFloat16; break;
    default: return absl::InvalidArgumentError("NCCL all-reduce: unsupported dtype");
  }
  KVS_RETURN_IF_ERROR(CheckAsync());
  KVS_NCCL_RETURN_IF_ERROR(
      ncclAllReduce(x.data, x.data, static_cast<size_t>(x.NumElements()), type, ncclSum, comm_, stream_));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllGather(const void* send, void* recv, size_t bytes) {
  if (comm_ == nullptr) return absl::FailedPreconditionError("the NCCL communicator was aborted");
  KVS_RETURN_IF_ERROR(CheckAsync());
  KVS_NCCL_RETURN_IF_ERROR(ncclAllGather(send, recv, bytes, ncclUint8, comm_, stream_));
  return absl::OkStatus();
}

}  // namespace kvs
