// Runs on the GPU machine; on machines without a GPU it skips and says why.
#include "kernels/cuda/cuda_device.h"

#include "gtest/gtest.h"

namespace kvs::cuda {
namespace {

TEST(CudaDeviceTest, ListsHopperDevicesWithMemory) {
  std::string why;
  const auto devices = ListDevices(&why);
  if (devices.empty()) GTEST_SKIP() << "no GPU here: " << why;
  for (const auto& d : devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.sm_major, 7);
    EXPECT_GT(d.total_bytes, size_t{1} << 30);
    EXPECT_GT(d.free_bytes, 0u);
  }
}

}  // namespace
}  // namespace kvs::cuda
