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
  size_t reserved = 0;      // virtual bytes reserved (device + host parts)
  size_t device_bytes = 0;  // the head in device memory (a multiple of the granularity)
  unsigned long long device_handle = 0, host_handle = 0;
};

// Maps `device_bytes` (rounded down to the allocation granularity, at most 2 MiB) of device
// memory followed by host memory for the rest of `device_bytes + host_bytes`, readable and
// writable by `device`.
absl::StatusOr<HostTailRange> MapHostTail(int device, size_t device_bytes, size_t host_bytes);
// Unmaps and frees a range from MapHostTail (the caller waits for work using it first).
void UnmapHostTail(const HostTailRange& range);

}  // namespace kvs::cuda
