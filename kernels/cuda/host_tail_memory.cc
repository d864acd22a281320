#include "kernels/cuda/host_tail_memory.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <algorithm>

#include "absl/strings/str_format.h"

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

absl::StatusOr<HostTailRange> MapHostTail(int device, size_t device_bytes, size_t host_bytes) {
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
  const size_t gran = std::max(gran_device, gran_host);
  HostTailRange range;
  range.device_bytes = device_bytes / gran * gran;
  const size_t total = device_bytes + host_bytes;
  range.reserved = (total + gran - 1) / gran * gran;
  const size_t tail = range.reserved - range.device_bytes;

  // Unwinds whatever was set up when a later call fails.
  CUdeviceptr base = 0;
  bool device_mapped = false, host_mapped = false;
  const auto undo = [&] {
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
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (CUresult r = d.set_access(base, range.reserved, &access, 1); r != CUDA_SUCCESS) {
    undo();
    return DriverError("granting the device access", r);
  }
  range.base = reinterpret_cast<void*>(base);
  return range;
}

void UnmapHostTail(const HostTailRange& range) {
  const DriverCalls& d = Driver();
  const auto base = reinterpret_cast<CUdeviceptr>(range.base);
  if (range.device_bytes > 0) d.unmap(base, range.device_bytes);
  d.unmap(base + range.device_bytes, range.reserved - range.device_bytes);
  if (range.device_handle != 0) d.release(range.device_handle);
  if (range.host_handle != 0) d.release(range.host_handle);
  d.free_address(base, range.reserved);
}

}  // namespace kvs::cuda
