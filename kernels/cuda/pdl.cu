#include <array>
#include <atomic>
#include <cstdlib>
#include <string_view>

#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda::pdl {
namespace {

// Compiled like every kernel of this library: its binary's architecture is theirs.
__global__ void ArchProbeKernel() {}

constexpr int kMaxDevices = 64;

// Compute capability 9.0 or later, and this library's kernels compiled for it.
int HopperKernels(int device) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return 0;
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, ArchProbeKernel) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return major >= 9 && attributes.binaryVersion >= 90 ? 1 : 0;
}

int PdlOn(int device) {
  if (const char* e = std::getenv("KVS_PDL"); e != nullptr && std::string_view(e) == "off") return 0;
  return HopperKernels(device);
}

// decide(device), once per device.
template <int (*decide)(int)>
bool PerDevice() {
  static std::array<std::atomic<int>, kMaxDevices> known{};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return false;
  int v = known[device].load(std::memory_order_relaxed);
  if (v == 0) {
    v = 1 + decide(device);
    known[device].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

}  // namespace

bool Enabled() { return PerDevice<PdlOn>(); }
bool ClustersAvailable() { return PerDevice<HopperKernels>(); }

}  // namespace kvs::cuda::pdl
