#include "kernels/cuda/host_tail_memory.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs::cuda {
namespace {

// The driver calls this file needs, looked up once.
struct DriverCalls {
  PFN_cuGetErrorString_v6000 error_string = nullptr;
  PFN_cuMemGetAllocationGranularity_v10020 granularity = nullptr;
  PFN_cuMemAddressReserve_v10020 reserve = nullptr;
  PFN_cuMemAddressFree_v10020 free_address = nullptr;
  PFN_cuMemCreate_v10020 create = nullptr;
  PFN_cuMemRelease_v10020 release = nullptr;
  PFN_cuMemMap_v10020 map = nullptr;
  PFN_cuMemUnmap_v10020 unmap = nullptr;
  PFN_cuMemSetAccess_v10020 set_access = nullptr;
  bool ok = false;
};

template <typename Fn>
bool Lookup(const char* name, Fn& fn) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess || p == nullptr) {
    cudaGetLastError();
    return false;
  }
  fn = reinterpret_cast<Fn>(p);
  return true;
}

const DriverCalls& Driver() {
  static const DriverCalls calls = [] {
    DriverCalls d;
    d.ok = Lookup("cuGetErrorString", d.error_string) && Lookup("cuMemGetAllocationGranularity", d.granularity) &&
           Lookup("cuMemAddressReserve", d.reserve) && Lookup("cuMemAddressFree", d.free_address) &&
           Lookup("cuMemCreate", d.create) && Lookup("cuMemRelease", d.release) && Lookup("cuMemMap", d.map) &&
           Lookup("cuMemUnmap", d.unmap) && Lookup("cuMemSetAccess", d.set_access);
    return d;
  }();
  return calls;
}

absl::Status DriverError(const char* what, CUresult r) {
  const char* text = "unknown error";
  if (Driver().error_string != nullptr) Driver().error_string(r, &text);
  return absl::ResourceExhaustedError(absl::StrFormat(
      "KV offload: %s failed (%s); host-located virtual memory needs a CUDA 12.2+ driver on Linux", what, text));
}

CUmemAllocationProp PinnedAt(CUmemLocationType type, int id) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = type;
  prop.location.id = id;
  return prop;
}

}  // namespace

absl::StatusOr<size_t> MappingGranularity(int device) {
  const DriverCalls& d = Driver();
  if (!d.ok) return absl::UnavailableError("KV offload: the CUDA driver's virtual memory calls are not available");
  const CUmemAllocationProp on_device = PinnedAt(CU_MEM_LOCATION_TYPE_DEVICE, device);
  const CUmemAllocationProp on_host = PinnedAt(CU_MEM_LOCATION_TYPE_HOST, 0);
  size_t gran_device = 0, gran_host = 0;
  if (CUresult r = d.granularity(&gran_device, &on_device, CU_MEM_ALLOC_GRANULARITY_MINIMUM); r != CUDA_SUCCESS) {
    return DriverError("the device allocation granularity query", r);
  }
  if (CUresult r = d.granularity(&gran_host, &on_host, CU_MEM_ALLOC_GRANULARITY_MINIMUM); r != CUDA_SUCCESS) {
    return DriverError("the host allocation granularity query", r);
  }
  return std::max(gran_device, gran_host);
}

absl::StatusOr<unsigned long long> CreateWindow(int device, size_t bytes) {
  const DriverCalls& d = Driver();
  if (!d.ok) return absl::UnavailableError("KV offload: the CUDA driver's virtual memory calls are not available");
  const CUmemAllocationProp on_device = PinnedAt(CU_MEM_LOCATION_TYPE_DEVICE, device);
  CUmemGenericAllocationHandle handle = 0;
  if (CUresult r = d.create(&handle, bytes, &on_device, 0); r != CUDA_SUCCESS) {
    return DriverError(absl::StrFormat("allocating a %d-byte device window", bytes).c_str(), r);
  }
  return static_cast<unsigned long long>(handle);
}

void ReleaseWindow(unsigned long long handle) { Driver().release(handle); }

absl::StatusOr<HostTailRange> MapHostTail(int device, size_t device_bytes, size_t host_bytes,
                                          unsigned long long window_handle, size_t window_offset,
                                          size_t window_bytes) {
  const DriverCalls& d = Driver();
  KVS_ASSIGN_OR_RETURN(const size_t gran, MappingGranularity(device));
  const CUmemAllocationProp on_device = PinnedAt(CU_MEM_LOCATION_TYPE_DEVICE, device);
  const CUmemAllocationProp on_host = PinnedAt(CU_MEM_LOCATION_TYPE_HOST, 0);
  HostTailRange range;
  range.device_bytes = device_bytes / gran * gran;
  const size_t total = device_bytes + host_bytes;
  range.mapped = (total + gran - 1) / gran * gran;
  range.reserved = range.mapped;
  if (window_handle != 0) {
    if (window_offset < range.mapped || window_offset % gran != 0 || window_bytes == 0 || window_bytes % gran != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "KV offload: a window of %d bytes at %d must be whole %d-byte granules past the %d bytes before it",
          window_bytes, window_offset, gran, range.mapped));
    }
    range.window_offset = window_offset;
    range.window_bytes = window_bytes;
    range.reserved = window_offset + window_bytes;
  }
  const size_t tail = range.mapped - range.device_bytes;

  // Unwinds whatever was set up when a later call fails.
  CUdeviceptr base = 0;
  bool device_mapped = false, host_mapped = false, window_mapped = false;
  const auto undo = [&] {
    if (window_mapped) d.unmap(base + range.window_offset, range.window_bytes);
    if (host_mapped) d.unmap(base + range.device_bytes, tail);
    if (device_mapped) d.unmap(base, range.device_bytes);
    if (range.host_handle != 0) d.release(range.host_handle);
    if (range.device_handle != 0) d.release(range.device_handle);
    if (base != 0) d.free_address(base, range.reserved);
  };
  if (CUresult r = d.reserve(&base, range.reserved, gran, 0, 0); r != CUDA_SUCCESS) {
    return DriverError(absl::StrFormat("reserving %d bytes of address space", range.reserved).c_str(), r);
  }
  CUmemGenericAllocationHandle handle = 0;
  if (range.device_bytes > 0) {
    if (CUresult r = d.create(&handle, range.device_bytes, &on_device, 0); r != CUDA_SUCCESS) {
      undo();
      return DriverError(absl::StrFormat("allocating %d bytes of device memory", range.device_bytes).c_str(), r);
    }
    range.device_handle = handle;
    if (CUresult r = d.map(base, range.device_bytes, 0, handle, 0); r != CUDA_SUCCESS) {
      undo();
      return DriverError("mapping the device part", r);
    }
    device_mapped = true;
  }
  if (CUresult r = d.create(&handle, tail, &on_host, 0); r != CUDA_SUCCESS) {
    undo();
    return DriverError(absl::StrFormat("allocating %d bytes of pinned host memory", tail).c_str(), r);
  }
  range.host_handle = handle;
  if (CUresult r = d.map(base + range.device_bytes, tail, 0, handle, 0); r != CUDA_SUCCESS) {
    undo();
    return DriverError("mapping the host part", r);
  }
  host_mapped = true;
  if (window_handle != 0) {
    if (CUresult r = d.map(base + range.window_offset, range.window_bytes, 0, window_handle, 0); r != CUDA_SUCCESS) {
      undo();
      return DriverError("mapping the device window", r);
    }
    window_mapped = true;
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  // Access is granted per mapped piece: the gap before the window is reserved, not mapped.
  if (CUresult r = d.set_access(base, range.mapped, &access, 1); r != CUDA_SUCCESS) {
    undo();
    return DriverError("granting the device access", r);
  }
  if (window_mapped) {
    if (CUresult r = d.set_access(base + range.window_offset, range.window_bytes, &access, 1); r != CUDA_SUCCESS) {
      undo();
      return DriverError("granting the device access to the window", r);
    }
  }
  range.base = reinterpret_cast<void*>(base);
  return range;
}

void UnmapHostTail(const HostTailRange& range) {
  const DriverCalls& d = Driver();
  const auto base = reinterpret_cast<CUdeviceptr>(range.base);
  if (range.window_bytes > 0) d.unmap(base + range.window_offset, range.window_bytes);
  if (range.device_bytes > 0) d.unmap(base, range.device_bytes);
  d.unmap(base + range.device_bytes, range.mapped - range.device_bytes);
  if (range.device_handle != 0) d.release(range.device_handle);
  if (range.host_handle != 0) d.release(range.host_handle);
  d.free_address(base, range.reserved);
}

}  // namespace kvs::cuda
