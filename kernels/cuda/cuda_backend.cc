#include "kernels/cuda/cuda_backend.h"

#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/common/cuda_status.h"
#include "kernels/common/half_convert.h"
#include "kernels/cuda/cublas_status.h"

namespace kvs {

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device) {
  const int n = CudaDeviceCount();
  if (device < 0 || device >= n) {
    return absl::FailedPreconditionError(absl::StrFormat("CUDA device %d requested, %d visible", device, n));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = device;
  KVS_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cudaDeviceProp prop{};
  KVS_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  b->name_ = absl::StrFormat("cuda:%d (%s)", device, prop.name);
  b->attention_ws_.num_sms = prop.multiProcessorCount;
  // The ops outrank KV block moves: a move kernel takes SMs only where the ops leave them free, and
  // the ops wait for a layer's moves only when they reach that layer.
  int least = 0, greatest = 0;
  KVS_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithPriority(&b->stream_, cudaStreamNonBlocking, greatest));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithPriority(&b->move_stream_, cudaStreamNonBlocking, least));
  KVS_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&b->ops_issued_, cudaEventDisableTiming));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasCreate(&b->cublas_));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasSetStream(b->cublas_, b->stream_));
  KVS_ASSIGN_OR_RETURN(b->cublas_workspace_, b->Allocate(kCublasWorkspaceBytes));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(b->cublas_, b->cublas_workspace_.data(), kCublasWorkspaceBytes));
  return b;
}

CudaBackend::~CudaBackend() {
  workspace_.Reset();
  copy_table_.Reset();
  move_table_.Reset();
  cublas_workspace_.Reset();
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  for (cudaEvent_t e : move_marks_) cudaEventDestroy(e);
  if (ops_issued_ != nullptr) cudaEventDestroy(ops_issued_);
  if (move_stream_ != nullptr) cudaStreamDestroy(move_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

std::string CudaBackend::Name() const { return name_; }

absl::StatusOr<DeviceBuffer> CudaBackend::Allocate(size_t bytes) {
  if (bytes == 0) return DeviceBuffer();
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrFormat("%s: cannot allocate %d bytes (%s); %d bytes free", name_,
                                                        bytes, cudaGetErrorString(err), FreeMemoryBytes()));
  }
  return DeviceBuffer(this, p, bytes);
}

absl::StatusOr<DeviceBuffer> CudaBackend::AllocateWithHostTail(size_t device_bytes, size_t host_bytes,
                                                             HostTailWindow window) {
  if (host_bytes == 0 && window.bytes == 0) return Allocate(device_bytes);
  unsigned long long window_handle = 0;
  if (window.bytes > 0) {
    // One physical window per id, created by its first range and mapped into every later one.
    auto it = windows_.find(window.id);
    if (it == windows_.end()) {
      KVS_ASSIGN_OR_RETURN(const unsigned long long handle, cuda::CreateWindow(device_, window.bytes));
      it = windows_.emplace(window.id, SharedWindow{handle, window.bytes, 0}).first;
    } else if (it->second.bytes != window.bytes) {
      return absl::InvalidArgumentError(absl::StrFormat("window %d is %d bytes, not %d", window.id, it->second.bytes,
                                                        window.bytes));
    }
    window_handle = it->second.handle;
  }
  auto range = cuda::MapHostTail(device_, device_bytes, host_bytes, window_handle, window.offset, window.bytes);
  if (!range.ok()) {
    if (window.bytes > 0) ReleaseWindowUse(window.id, /*mapped=*/false);
    return range.status();
  }
  range->window_id = window.bytes > 0 ? window.id : -1;
  if (window.bytes > 0) ++windows_[window.id].users;
  host_tails_[range->base] = *range;
  return DeviceBuffer(this, range->base, window.bytes > 0 ? window.offset + window.bytes : device_bytes + host_bytes);
}

void CudaBackend::ReleaseWindowUse(int32_t id, bool mapped) {
  auto it = windows_.find(id);
  if (it == windows_.end()) return;
  if (mapped) --it->second.users;
  if (it->second.users > 0) return;
  cuda::ReleaseWindow(it->second.handle);
  windows_.erase(it);
}

size_t CudaBackend::HostTailAlignment() const {
  const absl::StatusOr<size_t> gran = cuda::MappingGranularity(device_);
  return gran.ok() ? *gran : size_t{2} << 20;
}

void CudaBackend::Free(void* data, size_t) {
  if (auto it = host_tails_.find(data); it != host_tails_.end()) {
    // Unmapping does not wait for kernels the way cudaFree does.
    cudaStreamSynchronize(move_stream_);
    cudaStreamSynchronize(stream_);
    cuda::UnmapHostTail(it->second);
    if (it->second.window_id >= 0 && it->second.window_bytes > 0) ReleaseWindowUse(it->second.window_id, true);
    host_tails_.erase(it);
    return;
  }
  cudaFree(data);
}

size_t CudaBackend::FreeMemoryBytes() const {
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
  return free;
}

absl::Status CudaBackend::CopyToDevice(const void* host, void* device, size_t bytes) {
  ForgetRounding();
  if (bytes == 0) return absl::OkStatus();
  // Pageable host memory: the copy is complete (staged) when this returns, so callers may
  // reuse `host` at once.
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::StatusOr<HostBuffer> CudaBackend::AllocateHost(size_t bytes) {
  void* p = nullptr;
  // Mapped: kernels (CopyRegions) read and write it through the same pointer.
  if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped) != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrFormat("cannot allocate %d bytes of pinned host memory", bytes));
  }
  return HostBuffer(static_cast<std::byte*>(p), [](std::byte* q) { cudaFreeHost(q); });
}

absl::Status CudaBackend::CopyOnDevice(const void* src, void* dst, size_t bytes) {
  ForgetRounding();
  if (bytes == 0) return absl::OkStatus();
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  return absl::OkStatus();
}

bool CudaBackend::UsesCopyKernel(std::span<const CopyRegion> regions) {
  if (regions.size() <= 2) return false;
  bool words = true;  // every region in whole, aligned 16-byte words
  for (const CopyRegion& r : regions) {
    words &= (reinterpret_cast<uintptr_t>(r.src) | reinterpret_cast<uintptr_t>(r.dst) | r.bytes) % 16 == 0;
  }
  return words;
}

absl::Status CudaBackend::IssueRegions(std::span<const CopyRegion> regions, const CopyRegion* device_table,
                                       cudaStream_t stream, int max_blocks) {
  if (!UsesCopyKernel(regions)) {
    for (const CopyRegion& r : regions) {
      KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(r.dst, r.src, r.bytes, cudaMemcpyDefault, stream));
    }
    return absl::OkStatus();
  }
  // One kernel moves every region (pinned host memory is mapped: the same pointers work on the
  // device).
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchCopyRegions(device_table, static_cast<int64_t>(regions.size()), stream, max_blocks));
  return absl::OkStatus();
}

// Uploads `regions` into `table` (grown as needed) on `stream`; staged before it returns, so the
// caller's vector may go at once.
static absl::Status UploadTable(CudaBackend& b, std::span<const CopyRegion> regions, DeviceBuffer& table,
                                cudaStream_t stream) {
  const size_t bytes = regions.size_bytes();
  if (table.bytes() < bytes) {
    table.Reset();  // cudaFree waits for kernels still reading the old table
    KVS_ASSIGN_OR_RETURN(table, b.Allocate(std::max(bytes, size_t{4096})));
  }
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(table.data(), regions.data(), bytes, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyRegions(std::span<const CopyRegion> regions) {
  ForgetRounding();
  if (regions.empty()) return absl::OkStatus();
  // The table travels in a device buffer kept for the next batch.
  if (UsesCopyKernel(regions)) KVS_RETURN_IF_ERROR(UploadTable(*this, regions, copy_table_, stream_));
  return IssueRegions(regions, copy_table_.as<CopyRegion>(), stream_);
}

absl::StatusOr<cudaEvent_t> CudaBackend::MoveMark(int32_t slot) {
  if (slot < 0 || slot > (1 << 20)) return absl::InvalidArgumentError(absl::StrFormat("move slot %d is out of range", slot));
  while (static_cast<int32_t>(move_marks_.size()) <= slot) {
    cudaEvent_t e = nullptr;
    KVS_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    move_marks_.push_back(e);
  }
  return move_marks_[slot];
}

absl::Status CudaBackend::MoveRegions(std::span<const CopyRegion> regions, std::span<const MoveBatch> batches,
                                      bool beside_ops) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(CheckMoveBatches(regions, batches));
  // The whole table first, on the move stream (after the previous moves that read the old one),
  // then the moves, after every op issued so far.
  if (!regions.empty()) KVS_RETURN_IF_ERROR(UploadTable(*this, regions, move_table_, move_stream_));
  KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(ops_issued_, stream_));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(move_stream_, ops_issued_, cudaEventWaitDefault));
  int64_t first = 0;
  for (const MoveBatch& b : batches) {
    KVS_RETURN_IF_ERROR(IssueRegions(regions.subspan(first, b.count), move_table_.as<CopyRegion>() + first, move_stream_,
                                     beside_ops ? kMoveBlocksBesideOps : 0));
    first += b.count;
    if (b.mark < 0) continue;
    KVS_ASSIGN_OR_RETURN(cudaEvent_t mark, MoveMark(b.mark));
    KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(mark, move_stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::WaitMoves(int32_t slot) {
  KVS_ASSIGN_OR_RETURN(cudaEvent_t mark, MoveMark(slot));
  // Under capture the wait becomes a node of the graph that waits, on each replay, for whatever
  // the event last recorded (the flag is invalid outside capture).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream_, &capture));
  const unsigned flags = capture == cudaStreamCaptureStatusActive ? cudaEventWaitExternal : cudaEventWaitDefault;
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, mark, flags));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHostAsync(const void* device, void* host, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(const void* device, void* host, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::UploadFloat(std::span<const float> host, TensorView dst) {
  ForgetRounding();
  if (!dst.IsContiguous() || static_cast<size_t>(dst.NumElements()) != host.size()) {
    return absl::InvalidArgumentError("UploadFloat: destination must be contiguous and match the host size");
  }
  if (dst.dtype == DType::kF32) return CopyToDevice(host.data(), dst.data, host.size_bytes());
  if (dst.dtype != DType::kBF16) return absl::InvalidArgumentError("UploadFloat: destination must be f32 or bf16");
  std::vector<uint16_t> bits(host.size());
  for (size_t i = 0; i < host.size(); ++i) bits[i] = FloatToBf16Bits(host[i]);
  KVS_RETURN_IF_ERROR(CopyToDevice(bits.data(), dst.data, bits.size() * 2));
  return Synchronize();  // `bits` dies here
}

absl::Status CudaBackend::DownloadFloat(TensorView src, std::span<float> host) {
  if (static_cast<size_t>(src.NumElements()) != host.size()) return absl::InvalidArgumentError("DownloadFloat: size mismatch");
  const size_t esize = DTypeSize(src.dtype);
  if (src.dtype == DType::kF32) {  // straight into the caller's buffer
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(host.data(), src.cols * esize, src.data, src.stride * esize,
                                               src.cols * esize, src.rows, cudaMemcpyDeviceToHost, stream_));
    KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }
  std::vector<uint8_t> raw(host.size() * esize);
  KVS_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(raw.data(), src.cols * esize, src.data, src.stride * esize,
                                             src.cols * esize, src.rows, cudaMemcpyDeviceToHost, stream_));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (src.dtype == DType::kF32) {
    std::memcpy(host.data(), raw.data(), raw.size());
  } else if (src.dtype == DType::kBF16) {
    for (size_t i = 0; i < host.size(); ++i) {
      uint16_t b;
      std::memcpy(&b, raw.data() + 2 * i, 2);
      host[i] = Bf16BitsToFloat(b);
    }
  } else {
    return absl::InvalidArgumentError("DownloadFloat: source must be f32 or bf16");
  }
  return absl::OkStatus();
}

namespace {

class CudaGraph final : public RecordedOps {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream) : exec_(exec), stream_(stream) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  absl::Status Replay() override {
    KVS_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, stream_));
    return absl::OkStatus();
  }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RecordedOps>> CudaBackend::Record(const std::function<absl::Status()>& ops) {
  ForgetRounding();
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  const absl::Status issued = ops();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  if (!issued.ok() || ended != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    KVS_RETURN_IF_ERROR(issued);
    KVS_CUDA_RETURN_IF_ERROR(ended);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  KVS_CUDA_RETURN_IF_ERROR(made);
  return std::unique_ptr<RecordedOps>(new CudaGraph(exec, stream_));
}

absl::Status CudaBackend::Synchronize() {
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(move_stream_));
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

}  // namespace kvs
