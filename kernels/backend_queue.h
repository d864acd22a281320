// BackendQueue: the part of a backend that orders work — stream-ordered copies between host and
// backend memory, KV block moves on a queue of their own, synchronisation, and recording ops
// for replay (CUDA graphs). Part of Backend (kernels/backend.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/common/copy_region.h"
#include "kernels/tensor_view.h"

namespace kvs {

// Backend ops recorded once and replayed as a unit (a CUDA graph): the same kernels on the same
// buffers, so a replay sees whatever those buffers hold at the time.
class RecordedOps {
 public:
  virtual ~RecordedOps() = default;
  virtual absl::Status Replay() = 0;
};

class BackendQueue {
 public:
  virtual ~BackendQueue() = default;

  // Stream-ordered copies; CopyToHost waits for them.
  virtual absl::Status CopyToDevice(const void* host, void* device, size_t bytes) = 0;
  virtual absl::Status CopyToHost(const void* device, void* host, size_t bytes) = 0;
  // Stream-ordered copy within backend memory.
  virtual absl::Status CopyOnDevice(const void* src, void* dst, size_t bytes) = 0;
  // Stream-ordered device-to-host copy that does not wait; `host` is AllocateHost memory.
  virtual absl::Status CopyToHostAsync(const void* device, void* host, size_t bytes) = 0;
  // Many copies at once, stream-ordered and without waiting: each region lies in backend memory
  // or in an AllocateHost buffer, in any direction; regions do not overlap. Block swaps move
  // thousands of per-layer pieces: one operation instead of a call per piece.
  virtual absl::Status CopyRegions(std::span<const CopyRegion> regions) = 0;
  // KV block moves on a queue of their own, so that they overlap the ops (swaps cross the host
  // link at a fraction of the speed the ops run at). MoveRegions queues `batches` there in order —
  // each batch's regions (consecutive in `regions`) move in parallel, batches one after another —
  // after every op issued so far (a move reads what earlier ops wrote); a batch with mark >= 0
  // then marks that slot. WaitMoves(slot): ops issued after it, recorded ones included (a replay
  // waits for the slot's latest mark), start once the batches before its latest mark are done.
  // A backend with one queue runs the batches in place (the default).
  struct MoveBatch {
    int64_t count;  // regions in this batch
    int32_t mark;   // slot marked once the batch is done, or -1
  };
  // `beside_ops`: the ops are meant to run while these move (KvCache's per-layer plans), so the
  // backend keeps them to a few SMs — a copy on every SM delays each of the forward pass's
  // one-wave kernels there; false: the ops wait for them, which may use the whole device.
  virtual absl::Status MoveRegions(std::span<const CopyRegion> regions, std::span<const MoveBatch> batches,
                                   bool beside_ops = true);
  virtual absl::Status WaitMoves(int32_t slot) { return absl::OkStatus(); }
  // Converts float32 host values to `dst.dtype` while copying; dst must be contiguous.
  virtual absl::Status UploadFloat(std::span<const float> host, TensorView dst) = 0;
  // Converts `src` to float32 on the way to the host (waits).
  virtual absl::Status DownloadFloat(TensorView src, std::span<float> host) = 0;
  // The native queue that other libraries' device work (NCCL, the peer-memory collectives) is
  // ordered on beside the ops: a cudaStream_t on CUDA; null where ops run on the calling thread.
  virtual void* NativeStream() const { return nullptr; }
  // Waits for every op and move issued so far.
  virtual absl::Status Synchronize() = 0;
  // Records the ops `ops` issues instead of running them, for replay. Null (and nothing issued)
  // on a backend that cannot record; `ops` must not copy to the host or synchronize.
  virtual absl::StatusOr<std::unique_ptr<RecordedOps>> Record(const std::function<absl::Status()>& ops) {
    return std::unique_ptr<RecordedOps>();
  }

 protected:
  // MoveRegions' arguments agree: the batches hold exactly the regions given.
  static absl::Status CheckMoveBatches(std::span<const CopyRegion> regions, std::span<const MoveBatch> batches);
};

}  // namespace kvs
