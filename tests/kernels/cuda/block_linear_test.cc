// Weights kept in GGML blocks on the GPU, element by element against the CPU decoder (which equals
// the gguf package bit for bit: ggml_decode_test.cc), for every block type:
// - Linear at 1 to 8 tokens (the block GEMV: int8 activations; F8_E4M3's takes bf16 as they are),
//   9 to 128 (the bf16 tiles, or the block GEMM on int8 tensor cores where chosen; F8_E4M3 on FP8
//   tensor cores where cuBLASLt has an algorithm) and beyond or
//   forced (bf16 tiles + cuBLAS),
//   each output within a bound derived from the rounding each path does, with strided inputs and
//   outputs whose unused slots are NaN-poisoned and must stay so;
// - Embedding rows decoded exactly as the CPU decodes them, zeros for ids another rank holds;
// - the gated GEMV (one token: gate, up and their activation in one kernel) bit for bit as Linear
//   then SwiGlu / GeluGlu, for bf16 and F8_E4M3 weights.
// The seed is printed on failure. Skips with a reason where no GPU is visible.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/ggml_decode.h"
#include "kernels/common/half_convert.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/f8_gemm.h"
#include "tests/support/ggml_blocks.h"
#include "tests/support/gpu_fixture.h"

namespace kvs {
namespace {

class BlockLinearTest : public testing::GpuFixture<> {
 protected:
  DeviceBuffer Bytes(const void* host, size_t bytes) {
    auto buf = gpu_->Allocate(bytes);
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->CopyToDevice(host, buf->data(), bytes).ok());
    return std::move(*buf);
  }
  // Weights of `type` as the loader keeps them: copied as stored, then in the backend's layout.
  DeviceBuffer Blocks(GgmlType type, const std::vector<uint8_t>& host, int64_t rows, int64_t cols) {
    DeviceBuffer buf = Bytes(host.data(), host.size());
    EXPECT_TRUE(gpu_->ArrangeBlocks(type, buf.data(), rows, cols).ok());
    return buf;
  }
  // `host` (rows x stride floats, already representable in `dtype`) as a device tensor.
  DeviceBuffer Floats(const std::vector<float>& host, DType dtype, int64_t rows, int64_t stride) {
    auto buf = gpu_->Allocate(rows * stride * DTypeSize(dtype));
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->UploadFloat(host, buf->View(dtype, rows, stride)).ok());
    return std::move(*buf);
  }
  std::vector<float> Download(const DeviceBuffer& b, DType dtype, int64_t rows, int64_t stride) {
    std::vector<float> out(rows * stride);
    EXPECT_TRUE(gpu_->DownloadFloat(b.View(dtype, rows, stride), out).ok());
    return out;
  }
  static float Bf16(float v) { return Bf16BitsToFloat(FloatToBf16Bits(v)); }
  void TearDown() override {
    cuda::SetBlockGemmPath(cuda::BlockGemmPath::kAuto);
    cuda::SetBlockGemmPipelined(true);  // the default
  }
  // The most that rounding x to E4M3 per 128 columns (scale = max |x| / 448) moves x . w.
  static double F8ActivationRounding(const float* x, const float* w, int64_t k) {
    double bound = 0;
    for (int64_t b = 0; b < k; b += 128) {
      double amax = 0;
      for (int64_t e = b; e < b + 128; ++e) amax = std::max(amax, std::fabs(static_cast<double>(x[e])));
      const double scale = amax > 0 ? amax / 448 : 1;
      for (int64_t e = b; e < b + 128; ++e) {
        bound += std::fabs(w[e]) * (std::fabs(x[e]) * std::ldexp(1.0, -4) + scale * std::ldexp(1.0, -10));
      }
    }
    return bound;
  }
};

TEST_F(BlockLinearTest, EveryTypeMatchesTheDecodedWeightsWithinItsRounding) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  for (GgmlType type : testing::GpuBlockTypes()) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    SCOPED_TRACE(std::string(info.name));
    // Odd numbers of blocks and outputs; 1-8 tokens take the GEMV (four warps a row up to 4096 rows,
    // one above: 4099). F8_E4M3 also at 12 blocks of 128: cuBLASLt 13.1 refuses its block-scaled
    // FP8 GEMM at k = 384 (NOT_SUPPORTED, H100) and takes k = 1536, so the FP8 GEMM itself is
    // checked there.
    // A longer k (64 units of 32 weights, 128 for the K-quants) on a few shapes: the block GEMM
    // splits it along k (16 chunks: up to 16 splits) and adds the splits' sums.
    const int64_t k0 = (info.block_elems == 32 ? 7 : 3) * info.block_elems,
                  k_long = info.block_elems == 32 ? 2048 : 4096;
    for (const int64_t k : type == GgmlType::kF8_E4M3 ? std::vector<int64_t>{k0, 12 * info.block_elems}
                                                      : std::vector<int64_t>{k0, k_long}) {
      SCOPED_TRACE("k " + std::to_string(k));
      const int64_t f8_gemms_before = cuda::F8TensorCoreGemmsRun(),
                    f8_refused_before = cuda::F8TensorCoreShapesRefused();
      const int64_t wide = 4099, stored = k == k_long ? 128 : wide;  // rows made and uploaded
      const std::vector<uint8_t> w_all = testing::RandomGgmlBlocks(type, stored, k, rng);
      std::vector<float> wf(stored * k);
      DequantizeToF32(type, w_all, wf);
      DeviceBuffer gw = Blocks(type, w_all, stored, k);
      // Beyond 8 tokens: the block GEMM (int8 tensor cores on the blocks) up to 128 tokens, F8_E4M3 on
      // FP8 tensor cores (rows a multiple of 4: 36, 4096; tokens past a multiple of 4 through the GEMV),
      // and bf16 tiles beyond or where forced (kBf16Tiles): every path is checked.
      const std::vector<std::pair<int64_t, int64_t>> shapes =
          k == k_long ? std::vector<std::pair<int64_t, int64_t>>{{9, 37}, {33, 100}, {128, 70}, {3, 37}}
                      : std::vector<std::pair<int64_t, int64_t>>{{1, 37},   {2, 37},   {3, 37},   {5, 37},    {8, 37},
                                                                 {9, 37},   {21, 37},  {12, 36},  {33, 4096}, {70, 100},
                                                                 {200, 36}, {64, 512}, {1, wide}, {6, wide}};
      // The block GEMM twice: with the next chunk's loads in flight (9-32 tokens; the default but
      // for Q8_0) and without.
      const std::vector<std::pair<cuda::BlockGemmPath, bool>> paths = {{cuda::BlockGemmPath::kAuto, true},
                                                                       {cuda::BlockGemmPath::kAuto, false},
                                                                       {cuda::BlockGemmPath::kBf16Tiles, false},
                                                                       {cuda::BlockGemmPath::kInt8TensorCores, false},
                                                                       {cuda::BlockGemmPath::kInt8TensorCores, true}};
      for (const auto& [path, pipelined] : paths)
        for (auto [tokens, n] : shapes) {
          if ((path != cuda::BlockGemmPath::kAuto || pipelined) && tokens <= 8) continue;  // the GEMV either way
          if (pipelined && (tokens > 32 || type == GgmlType::kF8_E4M3)) continue;
          cuda::SetBlockGemmPath(path);
          cuda::SetBlockGemmPipelined(pipelined);
          // FP8 tensor cores where cuBLASLt has an algorithm (else the tiles: within this bound too).
          const bool f8_cores =
              type == GgmlType::kF8_E4M3 && path != cuda::BlockGemmPath::kBf16Tiles && tokens > 8 && n % 4 == 0;
          const bool block_gemm =
              type != GgmlType::kF8_E4M3 && tokens > cuda::kBlockGemvMaxTokens &&
              ((path == cuda::BlockGemmPath::kInt8TensorCores && tokens <= cuda::kBlockGemmMaxTokens) ||
               (path == cuda::BlockGemmPath::kAuto && tokens <= cuda::kBlockGemmAutoMaxTokens));
          SCOPED_TRACE(f8_cores     ? "FP8 tensor cores"
                       : block_gemm ? (pipelined ? "block GEMM, pipelined" : "block GEMM")
                       : tokens > 8 ? "bf16 tiles"
                                    : "GEMV");
          const TensorView wv{gw.data(), DType::kBlocks, n, k, k, type};  // the first n rows
          // Output rows 16-byte aligned (cuBLASLt's FP8 GEMM asks it), with 3 or more poisoned columns.
          const int64_t x_stride = k + 32, out_stride = (n + 3 + 7) / 8 * 8;
          std::normal_distribution<float> normal(0.0f, 1.0f);
          std::vector<float> x(tokens * x_stride, kNaN);  // unused columns poisoned
          for (int64_t t = 0; t < tokens; ++t)
            for (int64_t e = 0; e < k; ++e) x[t * x_stride + e] = Bf16(normal(rng) * (e % 7 == 0 ? 8.0f : 1.0f));
          DeviceBuffer gx = Floats(x, DType::kBF16, tokens, x_stride);
          const TensorView xv{gx.data(), DType::kBF16, tokens, k, x_stride};
          for (DType out_dtype : {DType::kF32, DType::kBF16}) {
            DeviceBuffer gy = Floats(std::vector<float>(tokens * out_stride, kNaN), out_dtype, tokens, out_stride);
            ASSERT_TRUE(
                gpu_->Linear(xv, wv, TensorView{}, TensorView{gy.data(), out_dtype, tokens, n, out_stride}).ok());
            SCOPED_TRACE(std::to_string(n) + " rows");
            const std::vector<float> got = Download(gy, out_dtype, tokens, out_stride);
            for (int64_t t = 0; t < tokens; ++t) {
              for (int64_t j = 0; j < n; ++j) {
                // The GEMV moves each activation by at most half its block's step (max|x| / 127 / 2);
                // the tiles round each weight to bf16 (8 significant bits: at most 2^-8 of itself; the
                // bound of 2^-9 first written here was exceeded by F8_E4M3's tiles on an H200, whose
                // code x scale products use every bit); fp32 sums add 1e-5 of sum |w x|.
                const testing::RoundedDot ref = testing::ReferenceDot(&x[t * x_stride], &wf[j * k], k);
                const double want = ref.value;
                // F8_E4M3's GEMV takes the bf16 activations as they are: no rounding of its own.
                const double gemv_rounding = type == GgmlType::kF8_E4M3 ? 0.0 : ref.rounding;
                // The block GEMM rounds the activations as the GEMV does, and nothing else.
                double bound = tokens <= 8 || block_gemm ? gemv_rounding : ref.magnitude * std::ldexp(1.0, -8);
                // FP8 tensor cores round each activation to E4M3 under its block's scale (max |x| / 448):
                // half a step, 2^-4 of itself, or 2^-10 of the scale where the code is subnormal; the
                // first tokens' multiple of 4 only (the rest take the GEMV: no rounding).
                // Hopper's FP8 MMAs also sum a block's products at reduced precision: 2^-12 of sum |w x|.
                if (f8_cores && t < tokens / 4 * 4) {
                  bound = F8ActivationRounding(&x[t * x_stride], &wf[j * k], k) + ref.magnitude * std::ldexp(1.0, -12);
                }
                bound += 1e-5 * ref.magnitude + 1e-6;
                if (out_dtype == DType::kBF16) bound += (std::fabs(want) + bound) * std::ldexp(1.0, -8);
                const double g = got[t * out_stride + j];
                ASSERT_LE(std::fabs(g - want), bound)
                    << tokens << " tokens, " << DTypeName(out_dtype) << " out: token " << t << ", output " << j
                    << ": got " << g << ", reference " << want;
              }
              for (int64_t j = n; j < out_stride; ++j) {
                ASSERT_TRUE(std::isnan(got[t * out_stride + j]))
                    << "wrote past its row: token " << t << ", column " << j;
              }
            }
          }
        }
      if (type == GgmlType::kF8_E4M3) {
        // On Hopper and later the FP8 GEMM was tried: it ran, or the shapes were refused — by
        // cuBLASLt, or (k = 384: split rows of 396 bytes) for rows not 16-byte aligned — and the
        // tiles multiplied them, checked above. Which one is printed for docs/performance.md.
        int major = 0;
        ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
        const int64_t ran = cuda::F8TensorCoreGemmsRun() - f8_gemms_before;
        const int64_t refused = cuda::F8TensorCoreShapesRefused() - f8_refused_before;
        std::printf("F8_E4M3: %lld GEMMs on FP8 tensor cores, %lld shapes refused (compute capability %d)\n",
                    static_cast<long long>(ran), static_cast<long long>(refused), major);
        if (major >= 9) {
          EXPECT_GT(ran + refused, 0);
        }
        if (major == 9 && k > k0) {
          EXPECT_GT(ran, 0) << "the FP8 GEMM never ran: its numbers are unchecked";
        }
      }
    }
  }
}

// The one-token GEMV that walks several row groups of a block at once (SetGemvGroupsInFlight)
// gives the bits of the one that walks them in turn, for every type it takes, over rows enough
// that a block has two or three groups (4,096: the O projection's; 3,001), rows of 4,096 and 8,192
// columns (a unit or two a lane) and unaligned (not wide) rows of an odd unit count; outputs f32
// into rows whose padding stays NaN. Rows of more than two units a lane (14,336 columns, the down
// projection's) keep the other kernel.
TEST_F(BlockLinearTest, GroupsInFlightGiveTheBitsOfOneGroupAtATime) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  for (const GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1}) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{
             {4096, 4096}, {3001, 4096}, {4096, 8192}, {4096, 33 * 32}, {4096, 14336}}) {
      const bool grouped = k / 32 <= 256;  // units a row: up to two a lane of its four warps
      SCOPED_TRACE(std::string(info.name) + ", " + std::to_string(n) + " rows, k " + std::to_string(k));
      const std::vector<uint8_t> w = testing::RandomGgmlBlocks(type, n, k, rng);
      DeviceBuffer gw = Blocks(type, w, n, k);
      const TensorView wv{gw.data(), DType::kBlocks, n, k, k, type};
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> x(k);
      for (float& v : x) v = Bf16(normal(rng));
      DeviceBuffer gx = Floats(x, DType::kBF16, 1, k);
      const int64_t stride = n + 3;
      std::vector<std::vector<float>> outs;
      for (const bool in_flight : {false, true}) {
        cuda::SetGemvGroupsInFlight(in_flight);
        DeviceBuffer gy = Floats(std::vector<float>(stride, kNaN), DType::kF32, 1, stride);
        const int64_t before = cuda::GemvGroupsInFlightLaunched();
        ASSERT_TRUE(gpu_->Linear(gx.View(DType::kBF16, 1, k), wv, TensorView{},
                                 TensorView{gy.data(), DType::kF32, 1, n, stride})
                        .ok());
        EXPECT_EQ(cuda::GemvGroupsInFlightLaunched() - before, in_flight && grouped ? 1 : 0) << "which kernel ran";
        outs.push_back(Download(gy, DType::kF32, 1, stride));
      }
      cuda::ResetGemvGroupsInFlight();
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_FALSE(std::isnan(outs[0][i])) << "output " << i;
        ASSERT_EQ(std::memcmp(&outs[0][i], &outs[1][i], sizeof(float)), 0)
            << "output " << i << ": " << outs[1][i] << " with groups in flight, " << outs[0][i] << " in turn";
      }
      for (int64_t i = n; i < stride; ++i) ASSERT_TRUE(std::isnan(outs[1][i])) << "wrote past the row: " << i;
    }
  }
}

TEST_F(BlockLinearTest, ANanActivationMakesOnlyItsTokensOutputsNan) {
  std::mt19937 rng(7);
  const GgmlType type = GgmlType::kQ4_K;
  const int64_t k = 512, n = 9, tokens = 3;
  const std::vector<uint8_t> w = testing::RandomGgmlBlocks(type, n, k, rng);
  DeviceBuffer gw = Blocks(type, w, n, k);
  std::vector<float> x(tokens * k, 0.5f);
  x[1 * k + 300] = std::numeric_limits<float>::quiet_NaN();
  DeviceBuffer gx = Floats(x, DType::kBF16, tokens, k);
  DeviceBuffer gy = Floats(std::vector<float>(tokens * n, 0.0f), DType::kF32, tokens, n);
  ASSERT_TRUE(gpu_->Linear(gx.View(DType::kBF16, tokens, k), TensorView{gw.data(), DType::kBlocks, n, k, k, type},
                           TensorView{}, gy.View(DType::kF32, tokens, n)).ok());
  const std::vector<float> got = Download(gy, DType::kF32, tokens, n);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < n; ++j) EXPECT_EQ(std::isnan(got[t * n + j]), t == 1) << "token " << t << ", output " << j;
}

TEST_F(BlockLinearTest, EmbeddingDecodesRowsExactlyAsTheCpu) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (GgmlType type : testing::GpuBlockTypes()) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    SCOPED_TRACE(std::string(info.name));
    const int64_t vocab = 50, hidden = 2 * info.block_elems, first_id = 100, out_stride = hidden + 32;
    const std::vector<uint8_t> table = testing::RandomGgmlBlocks(type, vocab, hidden, rng);
    std::vector<float> decoded(vocab * hidden);
    DequantizeToF32(type, table, decoded);
    // Ids of this shard's rows (first, last, middle) and of other ranks' (below and above it).
    const std::vector<int32_t> ids = {100, 149, 123, 99, 150, 0, 137};
    const int64_t tokens = static_cast<int64_t>(ids.size());
    DeviceBuffer gt = Blocks(type, table, vocab, hidden), gids = Bytes(ids.data(), ids.size() * 4);
    DeviceBuffer go = Floats(std::vector<float>(tokens * out_stride, std::numeric_limits<float>::quiet_NaN()),
                             DType::kF32, tokens, out_stride);
    ASSERT_TRUE(gpu_->Embedding(gids.as<int32_t>(), TensorView{gt.data(), DType::kBlocks, vocab, hidden, hidden, type},
                                static_cast<int32_t>(first_id), TensorView{go.data(), DType::kF32, tokens, hidden, out_stride})
                    .ok());
    const std::vector<float> got = Download(go, DType::kF32, tokens, out_stride);
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = ids[t] - first_id;
      for (int64_t e = 0; e < hidden; ++e) {
        const float want = row >= 0 && row < vocab ? decoded[row * hidden + e] : 0.0f;
        ASSERT_EQ(got[t * out_stride + e], want) << "id " << ids[t] << ", column " << e;
      }
      for (int64_t e = hidden; e < out_stride; ++e) ASSERT_TRUE(std::isnan(got[t * out_stride + e])) << "wrote past its row";
    }
  }
}

// CudaBackend::GatedLinear at one token — the batch-1 GEMV computing an MLP's gate and up rows and
// their activation in one kernel — against Linear then SwiGlu / GeluGlu on the same operands: the
// same bits, for bf16 weights (4 and 16 warps a row, 1 at 16,384 gate rows and more), both
// activations; the output's NaN-poisoned neighbours stay NaN. Two tokens, the knob off, and kept
// F8_E4M3 weights (which keep the two kernels) are not taken.
TEST_F(BlockLinearTest, GatedLinearGivesTheBitsOfLinearThenTheActivation) {
  cuda::SetGatedGemvOn(true);  // whatever the process default
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    bool f8;
    int64_t inter, k;
  };
  for (const Case& c : {Case{false, 37, 520}, Case{false, 37, 8192}, Case{false, 16411, 264}, Case{true, 37, 512},
                        Case{true, 2049, 1024}}) {
    SCOPED_TRACE(std::string(c.f8 ? "F8_E4M3" : "bf16") + ", inter " + std::to_string(c.inter) + ", k " +
                 std::to_string(c.k));
    const int64_t rows = 2 * c.inter;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    DeviceBuffer gw;
    TensorView wv;
    if (c.f8) {
      gw = Blocks(GgmlType::kF8_E4M3, testing::RandomGgmlBlocks(GgmlType::kF8_E4M3, rows, c.k, rng), rows, c.k);
      wv = TensorView{gw.data(), DType::kBlocks, rows, c.k, c.k, GgmlType::kF8_E4M3};
    } else {
      std::vector<float> w(rows * c.k);
      for (float& v : w) v = Bf16(normal(rng) * 0.05f);
      gw = Floats(w, DType::kBF16, rows, c.k);
      wv = TensorView{gw.data(), DType::kBF16, rows, c.k, c.k};
    }
    std::vector<float> x(2 * c.k);
    for (float& v : x) v = Bf16(normal(rng));
    DeviceBuffer gx = Floats(x, DType::kBF16, 2, c.k);
    const TensorView x1{gx.data(), DType::kBF16, 1, c.k, c.k};
    DeviceBuffer gate_up = Floats(std::vector<float>(rows, 0.0f), DType::kBF16, 1, rows);
    const int64_t out_stride = c.inter + 5;  // poisoned past the row
    for (const bool gelu : {false, true}) {
      SCOPED_TRACE(gelu ? "GeGLU" : "SwiGLU");
      DeviceBuffer want_buf = Floats(std::vector<float>(out_stride, kNaN), DType::kBF16, 1, out_stride);
      DeviceBuffer got_buf = Floats(std::vector<float>(out_stride, kNaN), DType::kBF16, 1, out_stride);
      const TensorView want_v{want_buf.data(), DType::kBF16, 1, c.inter, out_stride};
      const TensorView got_v{got_buf.data(), DType::kBF16, 1, c.inter, out_stride};
      const TensorView gu_v = gate_up.View(DType::kBF16, 1, rows);
      ASSERT_TRUE(gpu_->Linear(x1, wv, TensorView{}, gu_v).ok());
      ASSERT_TRUE((gelu ? gpu_->GeluGlu(gu_v, want_v) : gpu_->SwiGlu(gu_v, want_v)).ok());
      const absl::StatusOr<bool> taken = gpu_->GatedLinear(x1, wv, gelu, got_v);
      ASSERT_TRUE(taken.ok()) << taken.status();
      if (c.f8) {
        ASSERT_FALSE(*taken) << "F8_E4M3 weights keep Linear then the activation";
        continue;
      }
      ASSERT_TRUE(*taken) << "one token of these weights should take the gated GEMV";
      const std::vector<float> want = Download(want_buf, DType::kBF16, 1, out_stride);
      const std::vector<float> got = Download(got_buf, DType::kBF16, 1, out_stride);
      for (int64_t i = 0; i < c.inter; ++i) {
        ASSERT_FALSE(std::isnan(want[i])) << "reference output " << i;
        ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
            << "output " << i << ": gated GEMV " << got[i] << ", Linear then the activation " << want[i];
      }
      for (int64_t i = c.inter; i < out_stride; ++i) ASSERT_TRUE(std::isnan(got[i])) << "wrote past its row: " << i;
    }
    // Not taken: two tokens; the knob off.
    DeviceBuffer out2 = Floats(std::vector<float>(2 * c.inter, 0.0f), DType::kBF16, 2, c.inter);
    const absl::StatusOr<bool> two = gpu_->GatedLinear(TensorView{gx.data(), DType::kBF16, 2, c.k, c.k}, wv, false,
                                                       out2.View(DType::kBF16, 2, c.inter));
    ASSERT_TRUE(two.ok() && !*two);
    cuda::SetGatedGemvOn(false);
    const absl::StatusOr<bool> off = gpu_->GatedLinear(x1, wv, false, out2.View(DType::kBF16, 1, c.inter));
    cuda::SetGatedGemvOn(true);
    ASSERT_TRUE(off.ok() && !*off);
  }
  cuda::SetGatedGemvOn(cuda::kGatedGemvByDefault);
}

}  // namespace
}  // namespace kvs
