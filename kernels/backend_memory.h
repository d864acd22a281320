// BackendMemory: the part of a backend that allocates — device memory, page-locked host
// memory, and buffers whose tail lives in host memory (the KV cache's offload tier). With
// BackendQueue (copies, moves, graphs) and BackendOps (the op set) it makes a Backend
// (kernels/backend.h); a new allocator touches this interface only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"

namespace kvs {

// A device window that host-tail buffers share (Backend::AllocateWithHostTail).
struct HostTailWindow {
  int32_t id = -1;
  size_t offset = 0;
  size_t bytes = 0;
};

class BackendMemory;

// Host memory a backend copies to and from at full speed (page-locked on CUDA); frees itself.
using HostBuffer = std::unique_ptr<std::byte[], void (*)(std::byte*)>;

// Move-only owner of one allocation in a backend's memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(BackendMemory* owner, void* data, size_t bytes) : owner_(owner), data_(data), bytes_(bytes) {}
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  ~DeviceBuffer() { Reset(); }

  void Reset();
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  TensorView View(DType dtype, int64_t rows, int64_t cols) const;

 private:
  BackendMemory* owner_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class BackendMemory {
 public:
  virtual ~BackendMemory() = default;

  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  // Bytes this backend could still allocate (device free memory, or the CPU budget).
  virtual size_t FreeMemoryBytes() const = 0;
  // Host staging memory (the KV cache's host tier); not counted against device memory.
  virtual absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) = 0;
  // One buffer that ops address as a whole: its first `device_bytes` (on CUDA rounded down to the
  // 2 MiB mapping granularity) in device memory, the rest in host memory that kernels read and
  // write in place over the host link. The KV cache's offload tier: only the device part counts
  // against FreeMemoryBytes.
  //
  // With a `window` (bytes > 0), the buffer also has `window.bytes` of device memory at
  // `window.offset` (a multiple of HostTailAlignment(), past the host part) that every buffer
  // allocated with the same window id shares on CUDA — one physical window mapped into each
  // range, so one layer's worth of staging memory serves every layer (the KV cache stages a
  // layer's offloaded blocks there before its prefill attention). The CPU backend gives each
  // buffer a window of its own (heap memory outside its budget), which behaves the same for a
  // user that stages before each read. On CUDA a window is device memory once per id.
  virtual absl::StatusOr<DeviceBuffer> AllocateWithHostTail(size_t device_bytes, size_t host_bytes,
                                                            HostTailWindow window = {}) = 0;
  // What a HostTailWindow offset and size must be a multiple of.
  virtual size_t HostTailAlignment() const { return 256; }

 protected:
  friend class DeviceBuffer;
  virtual void Free(void* data, size_t bytes) = 0;
};

}  // namespace kvs
