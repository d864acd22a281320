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

int Decide(int device) {
  if (const char* e = std::getenv("KVS_PDL"); e != nullptr && std::string_view(e) == "off") return 0;
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return 0;
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, ArchProbeKernel) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return major >= 9 && attributes.binaryVersion >= 90 ? 1 : 0;
}

}  // namespace

bool Enabled() {
  static std::array<std::atomic<int>, kMaxDevices> known{};  // 0 unknown, 1 off, 2 on
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return false;
  int v = known[device].load(std::memory_order_relaxed);
  if (v == 0) {
    v = 1 + Decide(device);
    known[device].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

}  // namespace kvs::cuda::pdl
