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

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
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

// The all-reduce fused with the residual add and the next RMSNorm (issue 22): the residual equals
// the plain path's (bf16 rank-order sum added in f32) bit for bit, the normalized output each
// element within bf16 rounding of a double-precision reference, and every rank's output is the
// same bytes. Decode-sized rows (SmolLM2's 576, Llama's 4096) and the one-shot limit.
TEST_F(PeerAllReduceTest, FusedResidualAddAndRmsNormMatchTheReferenceOnEveryRank) {
  uint32_t seed = 0;
  if (comm_->rank() == 0) seed = std::random_device{}();
  ASSERT_TRUE(comm_->BroadcastBytes(&seed, sizeof(seed), 0).ok());
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 4096}, {3, 576}, {8, 4096}, {64, 4096}, {5, 8}}) {
    const std::string what = std::to_string(rows) + " x " + std::to_string(cols);
    const int64_t n = rows * cols, res_stride = cols + 4, out_stride = cols + 8;  // padded rows, as views
    ASSERT_TRUE(PeerAllReduce::FusesNorm(TensorView{reinterpret_cast<void*>(256), DType::kBF16, rows, cols, cols},
                                         TensorView{reinterpret_cast<void*>(256), DType::kF32, rows, cols, res_stride},
                                         TensorView{reinterpret_cast<void*>(256), DType::kBF16, 1, cols, cols},
                                         TensorView{reinterpret_cast<void*>(256), DType::kBF16, rows, cols, out_stride}))
        << what;
    const std::vector<float> x = Values(seed + n, comm_->rank(), n, true);
    const std::vector<float> res0 = Values(seed + 1, 100, rows * res_stride, false);  // the same on every rank
    const std::vector<float> w = Values(seed + 2, 200, cols, true);
    char *dx = nullptr, *dres = nullptr, *dw = nullptr, *dout = nullptr;
    ASSERT_EQ(cudaMalloc(&dx, n * 2), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dres, rows * res_stride * 4), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dw, cols * 2), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dout, rows * out_stride * 2), cudaSuccess);
    Upload(x, true, dx);
    Upload(res0, false, dres);
    Upload(w, true, dw);
    const TensorView tx = TensorView::Contiguous(dx, DType::kBF16, rows, cols);
    const TensorView tres{dres, DType::kF32, rows, cols, res_stride};
    const TensorView tw = TensorView::Contiguous(dw, DType::kBF16, 1, cols);
    const TensorView tout{dout, DType::kBF16, rows, cols, out_stride};
    ASSERT_TRUE(peer_->AllReduceAddRmsNorm(tx, tres, tw, 1e-5f, tout, stream_).ok()) << what;
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << what;
    ASSERT_TRUE(peer_->CheckError().ok()) << what;

    const std::vector<float> sum = Expected(seed + n, n, true);
    const std::vector<float> got_res = Download(dres, rows * res_stride, false);
    const std::vector<float> got_out = Download(dout, rows * out_stride, true);
    std::vector<float> want_res = res0;
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < cols; ++c) {
        want_res[r * res_stride + c] = res0[r * res_stride + c] + sum[r * cols + c];
        ss += static_cast<double>(want_res[r * res_stride + c]) * want_res[r * res_stride + c];
      }
      const double inv = 1.0 / std::sqrt(ss / cols + 1e-5);
      for (int64_t c = 0; c < cols; ++c) {
        const double want = want_res[r * res_stride + c] * inv * w[c];
        const double got = got_out[r * out_stride + c];
        ASSERT_LE(std::fabs(got - want), 1e-2 * (1.0 + std::fabs(want))) << what << ": row " << r << " col " << c;
      }
    }
    ExpectEqual(got_res, want_res, what + " residual");  // padding columns untouched too
    // Every rank the same bytes: the minimum and maximum of a hash over the group agree.
    uint64_t h = 1469598103934665603ull;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        uint32_t bits;
        std::memcpy(&bits, &got_out[r * out_stride + c], 4);
        h = (h ^ bits) * 1099511628211ull;
      }
    }
    const int64_t mine = static_cast<int64_t>(h >> 2);
    auto lo = comm_->AllReduceMin(mine), neg_hi = comm_->AllReduceMin(-mine);
    ASSERT_TRUE(lo.ok() && neg_hi.ok());
    EXPECT_EQ(*lo, -*neg_hi) << what << ": the ranks' normalized outputs differ";
    for (char* p : {dx, dres, dw, dout}) cudaFree(p);
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
