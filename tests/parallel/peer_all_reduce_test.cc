// The peer-memory collectives (parallel/peer_all_reduce.h) under `mpirun -np 2` and `-np 3` on
// the GPU machine, where the ranks may share one GPU (CUDA IPC works between its processes; NCCL
// refuses that, so the expected values come from MPI): every rank's random buffer is gathered over
// MPI and summed on the host in rank order, as the kernels sum, and the device result must equal
// it element for element — bf16 and f32, 1 element to 64 MiB, odd sizes, unaligned views, one-shot
// and two-shot, several chunks, and inside a CUDA graph replayed on new data. Seeds are printed
// on failure. Without a GPU every rank skips.
#include "parallel/peer_all_reduce.h"

#include <cuda_runtime.h>
#include <mpi.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/support/mpi_test_main.h"

namespace kvs {
namespace {

std::unique_ptr<MpiCommunicator> WorldComm() { return testing::WorldCommunicator(std::chrono::seconds(60)); }

class PeerAllReduceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no GPU visible: the peer collectives run on the GPU machine (scripts/gpu_all_reduce_check.sh)";
    comm_ = WorldComm();
    ASSERT_GE(comm_->size(), 2) << "run under mpirun -np 2 (or 3)";
    ASSERT_EQ(cudaSetDevice(comm_->rank() % devices), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    auto p = PeerAllReduce::Create(*comm_, std::chrono::seconds(60));
    ASSERT_TRUE(p.ok()) << p.status();
    peer_ = std::move(*p);
  }
  void TearDown() override {
    peer_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Rank `rank`'s values for a call (bf16-representable when bf16), the same on every rank.
  static std::vector<float> Values(uint32_t seed, int rank, int64_t n, bool bf16) {
    std::mt19937 rng(seed * 977 + rank);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = bf16 ? Bf16BitsToFloat(FloatToBf16Bits(normal(rng))) : normal(rng);
    return v;
  }
  // The sum in rank order 0, 1, ... in f32, rounded to bf16 when bf16: what every rank must get.
  std::vector<float> Expected(uint32_t seed, int64_t n, bool bf16) const {
    std::vector<float> sum(n, 0.0f);
    for (int r = 0; r < comm_->size(); ++r) {
      const std::vector<float> v = Values(seed, r, n, bf16);
      for (int64_t i = 0; i < n; ++i) sum[i] += v[i];
    }
    if (bf16) {
      for (auto& s : sum) s = Bf16BitsToFloat(FloatToBf16Bits(s));
    }
    return sum;
  }
  // Host floats as the device holds them, at `offset` elements into `dev`.
  static void Upload(const std::vector<float>& v, bool bf16, char* dev) {
    if (bf16) {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = FloatToBf16Bits(v[i]);
      cudaMemcpy(dev, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
    } else {
      cudaMemcpy(dev, v.data(), v.size() * 4, cudaMemcpyHostToDevice);
    }
  }
  static std::vector<float> Download(const char* dev, int64_t n, bool bf16) {
    std::vector<float> v(n);
    if (bf16) {
      std::vector<uint16_t> h(n);
      cudaMemcpy(h.data(), dev, n * 2, cudaMemcpyDeviceToHost);
      for (int64_t i = 0; i < n; ++i) v[i] = Bf16BitsToFloat(h[i]);
    } else {
      cudaMemcpy(v.data(), dev, n * 4, cudaMemcpyDeviceToHost);
    }
    return v;
  }
  // Element-by-element equality, naming the first differing element.
  static void ExpectEqual(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0) << what << ": element " << i << " is " << got[i] << ", want " << want[i];
    }
  }

  std::unique_ptr<MpiCommunicator> comm_;
  std::unique_ptr<PeerAllReduce> peer_;
  cudaStream_t stream_ = nullptr;
};

TEST_F(PeerAllReduceTest, SumsEqualTheRankOrderSumForEverySizeAndType) {
  uint32_t seed = 0;
  if (comm_->rank() == 0) seed = std::random_device{}();
  ASSERT_TRUE(comm_->BroadcastBytes(&seed, sizeof(seed), 0).ok());
  SCOPED_TRACE("seed " + std::to_string(seed));
  // Odd sizes around the vector width and the one-shot/two-shot and chunk boundaries, to 64 MiB.
  const std::vector<int64_t> sizes = {1, 7, 8, 9, 1000, 4097, 65539, 262147, 1 << 20, (4 << 20) + 5, 16 << 20};
  for (bool bf16 : {true, false}) {
    const size_t elem = bf16 ? 2 : 4;
    for (int64_t n : sizes) {
      if (n * static_cast<int64_t>(elem) > (int64_t{64} << 20)) continue;
      for (int64_t offset : {0, 1}) {  // an unaligned view: the scalar path
        if (offset == 1 && n > 65539) continue;
        const std::string what = std::string(bf16 ? "bf16" : "f32") + " n=" + std::to_string(n) + " offset " +
                                 std::to_string(offset);
        char* dev = nullptr;
        ASSERT_EQ(cudaMalloc(&dev, (n + offset) * elem), cudaSuccess);
        Upload(Values(seed + n, comm_->rank(), n, bf16), bf16, dev + offset * elem);
        const TensorView x = TensorView::Contiguous(dev + offset * elem, bf16 ? DType::kBF16 : DType::kF32, 1, n);
        ASSERT_TRUE(peer_->AllReduceSum(x, stream_).ok()) << what;
        ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
        ASSERT_TRUE(peer_->CheckError().ok()) << what;
        ExpectEqual(Download(dev + offset * elem, n, bf16), Expected(seed + n, n, bf16), what);
        cudaFree(dev);
      }
    }
  }
}

TEST_F(PeerAllReduceTest, ACapturedGraphReplaysOnNewData) {
  const int64_t n = 4096 * 8 + 3;  // a decode step's message and a tail
  char* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, n * 2), cudaSuccess);
  Upload(Values(1, comm_->rank(), n, true), true, dev);
  const TensorView x = TensorView::Contiguous(dev, DType::kBF16, 1, n);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_TRUE(peer_->AllReduceSum(x, stream_).ok());
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (uint32_t seed : {11u, 12u, 13u}) {
    Upload(Values(seed, comm_->rank(), n, true), true, dev);
    ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    ExpectEqual(Download(dev, n, true), Expected(seed, n, true), "replay with seed " + std::to_string(seed));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(dev);
}

TEST_F(PeerAllReduceTest, AllGatherConcatenatesInRankOrder) {
  for (size_t bytes : {size_t{3}, size_t{4096}, size_t{(9 << 20) + 7}}) {  // the last in two calls
    const int ranks = comm_->size(), me = comm_->rank();
    std::vector<uint8_t> send(bytes);
    for (size_t i = 0; i < bytes; ++i) send[i] = static_cast<uint8_t>(me * 31 + i * 7);
    char *dsend = nullptr, *drecv = nullptr;
    ASSERT_EQ(cudaMalloc(&dsend, bytes), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&drecv, bytes * ranks), cudaSuccess);
    cudaMemcpy(dsend, send.data(), bytes, cudaMemcpyHostToDevice);
    ASSERT_TRUE(peer_->AllGather(dsend, drecv, bytes, stream_).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    std::vector<uint8_t> recv(bytes * ranks);
    cudaMemcpy(recv.data(), drecv, recv.size(), cudaMemcpyDeviceToHost);
    for (int r = 0; r < ranks; ++r)
      for (size_t i = 0; i < bytes; ++i) {
        ASSERT_EQ(recv[r * bytes + i], static_cast<uint8_t>(r * 31 + i * 7)) << bytes << " bytes, rank " << r << ", byte " << i;
      }
    cudaFree(dsend);
    cudaFree(drecv);
  }
}

}  // namespace
}  // namespace kvs

int main(int argc, char** argv) { return kvs::testing::RunMpiTests(argc, argv); }
