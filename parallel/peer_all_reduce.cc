#include "parallel/peer_all_reduce.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "kernels/common/cuda_status.h"
#include "kernels/common/status_macros.h"

namespace kvs {

absl::StatusOr<std::unique_ptr<PeerAllReduce>> PeerAllReduce::Create(MpiCommunicator& control,
                                                                     std::chrono::milliseconds timeout) {
  const int ranks = control.size(), rank = control.rank();
  if (ranks > peer::kMaxRanks) {
    return absl::InvalidArgumentError(absl::StrFormat("the peer-memory all-reduce takes up to %d ranks, not %d",
                                                      peer::kMaxRanks, ranks));
  }
  std::unique_ptr<PeerAllReduce> p(new PeerAllReduce());
  p->timeout_ = timeout;
  const size_t bytes = peer::kFlagBytes + 2 * kStagingBytes;
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&p->mine_, bytes));
  KVS_CUDA_RETURN_IF_ERROR(cudaMemset(p->mine_, 0, peer::kFlagBytes));
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&p->control_.epochs, peer::kBlocks * sizeof(uint32_t)));
  KVS_CUDA_RETURN_IF_ERROR(cudaMemset(p->control_.epochs, 0, peer::kBlocks * sizeof(uint32_t)));
  KVS_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p->error_host_, sizeof(int32_t), cudaHostAllocMapped));
  *p->error_host_ = -1;
  KVS_CUDA_RETURN_IF_ERROR(cudaHostGetDevicePointer(reinterpret_cast<void**>(&p->control_.error), p->error_host_, 0));
  p->control_.timeout_ns = static_cast<uint64_t>(timeout.count()) * 1000000ull;
  KVS_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());  // the zeroed flags are in place before any peer can write them

  cudaIpcMemHandle_t handle;
  KVS_CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&handle, p->mine_));
  std::vector<cudaIpcMemHandle_t> handles(ranks);
  KVS_RETURN_IF_ERROR(control.AllGather(&handle, handles.data(), sizeof(handle)));
  p->peers_.rank = rank;
  p->peers_.ranks = ranks;
  for (int r = 0; r < ranks; ++r) {
    char* base = static_cast<char*>(p->mine_);
    if (r != rank) {
      void* mapped = nullptr;
      const cudaError_t err = cudaIpcOpenMemHandle(&mapped, handles[r], cudaIpcMemLazyEnablePeerAccess);
      if (err != cudaSuccess) {
        return absl::FailedPreconditionError(absl::StrFormat("rank %d cannot map rank %d's buffer (cudaIpcOpenMemHandle: %s)",
                                                             rank, r, cudaGetErrorString(err)));
      }
      p->opened_.push_back(mapped);
      base = static_cast<char*>(mapped);
    }
    p->peers_.flags[r] = reinterpret_cast<uint32_t*>(base);
    p->peers_.data[r] = base + peer::kFlagBytes;
    p->peers_.result[r] = base + peer::kFlagBytes + kStagingBytes;
  }
  // Every rank has mapped every buffer (and zeroed its flags) before any collective runs.
  KVS_RETURN_IF_ERROR(control.Barrier());
  return p;
}

PeerAllReduce::~PeerAllReduce() {
  for (void* m : opened_) cudaIpcCloseMemHandle(m);
  if (mine_ != nullptr) cudaFree(mine_);
  if (control_.epochs != nullptr) cudaFree(control_.epochs);
  if (error_host_ != nullptr) cudaFreeHost(error_host_);
}

absl::Status PeerAllReduce::CheckError() const {
  const int32_t waited = *reinterpret_cast<volatile int32_t*>(error_host_);
  if (waited < 0) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrFormat(
      "rank %d: the peer-memory all-reduce waited more than %d ms for rank %d (did it stop?)", peers_.rank,
      static_cast<long long>(timeout_.count()), waited));
}

absl::Status PeerAllReduce::AllReduceSum(TensorView x, cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckError());
  if (!x.IsContiguous()) return absl::InvalidArgumentError("all-reduce needs a contiguous tensor");
  if (x.dtype != DType::kBF16 && x.dtype != DType::kF32) {
    return absl::InvalidArgumentError("the peer-memory all-reduce sums bf16 or f32");
  }
  const size_t elem = DTypeSize(x.dtype);
  const int64_t n = x.NumElements(), chunk = static_cast<int64_t>(kStagingBytes / elem);
  for (int64_t at = 0; at < n; at += chunk) {
    const int64_t m = std::min(chunk, n - at);
    KVS_CUDA_RETURN_IF_ERROR(peer::LaunchPeerAllReduce(static_cast<char*>(x.data) + at * elem, m, x.dtype == DType::kBF16,
                                            m * elem > kOneShotMaxBytes, peers_, control_, stream));
  }
  return absl::OkStatus();
}

bool PeerAllReduce::FusesNorm(TensorView x, TensorView residual, TensorView weight, TensorView out) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return x.dtype == DType::kBF16 && x.IsContiguous() && x.cols % 8 == 0 &&
         static_cast<size_t>(x.NumElements()) * 2 <= kOneShotMaxBytes && aligned(x.data) &&
         residual.dtype == DType::kF32 && residual.rows == x.rows && residual.cols == x.cols && residual.stride % 4 == 0 &&
         aligned(residual.data) && weight.dtype == DType::kBF16 && weight.NumElements() == x.cols && aligned(weight.data) &&
         out.dtype == DType::kBF16 && out.rows == x.rows && out.cols == x.cols && out.stride % 8 == 0 && aligned(out.data);
}

absl::Status PeerAllReduce::AllReduceAddRmsNorm(TensorView x, TensorView residual, TensorView weight, float eps,
                                                TensorView out, cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckError());
  if (!FusesNorm(x, residual, weight, out)) {
    return absl::InvalidArgumentError("the fused all-reduce + RMSNorm takes one-shot bf16 rows of a multiple of 8");
  }
  KVS_CUDA_RETURN_IF_ERROR(peer::LaunchPeerAllReduceAddRmsNorm(x.data, x.rows, x.cols, static_cast<float*>(residual.data),
                                                               residual.stride, weight.data, eps, out.data, out.stride,
                                                               peers_, control_, stream));
  return absl::OkStatus();
}

absl::Status PeerAllReduce::AllGather(const void* send, void* recv, size_t bytes, cudaStream_t stream) {
  KVS_RETURN_IF_ERROR(CheckError());
  for (size_t at = 0; at < bytes; at += kStagingBytes) {
    const size_t m = std::min(kStagingBytes, bytes - at);
    KVS_CUDA_RETURN_IF_ERROR(peer::LaunchPeerAllGather(static_cast<const char*>(send) + at, static_cast<char*>(recv) + at, m, bytes,
                                            peers_, control_, stream));
  }
  return absl::OkStatus();
}

}  // namespace kvs
