// Memory for a KV pool larger than the GPU: one virtual address range whose head is device
// memory and whose tail is pinned host memory mapped for the device (CUDA virtual memory
// management with a host-located allocation). Kernels address the whole range with ordinary
// pointers; what they read or write in the tail crosses the host link in place (zero-copy:
// nothing is staged), so a KV block id past the device part simply lands in host memory.
//
// The driver API is reached through the runtime's entry-point lookup, so nothing links libcuda
// and a machine without a driver can still load this library.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace kvs::cuda {

struct HostTailRange {
  void* base = nullptr;
  size_t reserved = 0;      // virtual bytes reserved (device + host parts, then the window)
  size_t device_bytes = 0;  // the head in device memory (a multiple of the granularity)
  size_t mapped = 0;        // device + host parts (the host part ends here)
  size_t window_offset = 0, window_bytes = 0;  // a shared device window mapped there, if any
  int32_t window_id = -1;                      // the caller's name for that window
  unsigned long long device_handle = 0, host_handle = 0;
};

// The granularity mappings (and so window offsets and sizes) come in, for `device`.
absl::StatusOr<size_t> MappingGranularity(int device);

// Device memory for a window that several ranges map (MapHostTail); `bytes` a multiple of the
// granularity. Released by ReleaseWindow once no range maps it.
absl::StatusOr<unsigned long long> CreateWindow(int device, size_t bytes);
void ReleaseWindow(unsigned long long handle);

// Maps `device_bytes` (rounded down to the allocation granularity, at most 2 MiB) of device
// memory followed by host memory for the rest of `device_bytes + host_bytes`, readable and
// writable by `device`; with `window_handle` != 0, also maps that window's `window_bytes` at
// `window_offset` (granularity multiples, past the host part).
absl::StatusOr<HostTailRange> MapHostTail(int device, size_t device_bytes, size_t host_bytes,
                                          unsigned long long window_handle = 0, size_t window_offset = 0,
                                          size_t window_bytes = 0);
// Unmaps and frees a range from MapHostTail, not its window (the caller waits for work using it
// first).
void UnmapHostTail(const HostTailRange& range);

}  // namespace kvs::cuda
