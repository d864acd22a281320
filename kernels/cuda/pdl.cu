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

// Whether `device` is compute capability 9.0 or later and runs kernels compiled for it.
int HopperBinaryOn(int device) {
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

bool HopperBinary() {
  static std::array<std::atomic<int>, kMaxDevices> known{};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return false;
  int v = known[device].load(std::memory_order_relaxed);
  if (v == 0) {
    v = 1 + HopperBinaryOn(device);
    known[device].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

bool Enabled() {
  static const bool off = [] {
    const char* e = std::getenv("KVS_PDL");
    return e != nullptr && std::string_view(e) == "off";
  }();
  return !off && HopperBinary();
}

}  // namespace kvs::cuda::pdl
