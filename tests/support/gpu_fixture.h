// The base of the CUDA op tests: a CudaBackend on GPU 0, or the test skipped with the reason
// where no GPU is visible (CI compiles these tests; the GPU machine runs them).
#pragma once

#include <memory>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"

namespace kvs::testing {

template <typename Base = ::testing::Test>
class GpuFixture : public Base {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU visible: CUDA tests run on the GPU machine";
    auto b = CudaBackend::Create(0);
    ASSERT_TRUE(b.ok()) << b.status();
    gpu_ = std::move(*b);
  }
  std::unique_ptr<CudaBackend> gpu_;
};

}  // namespace kvs::testing
