// The decode GEMV's fused epilogues (cuda_kernels.h's GemvEpilogue) against the two ops they
// replace, bit for bit: LinearGated (gate/up projection with SwiGLU or GeGLU) equals Linear then
// SwiGlu / GeluGlu, and LinearAddRmsNorm (a projection joining the residual stream) equals Linear
// then AddRmsNorm — the outputs, the updated residual, and the rounding the fused kernel leaves for
// the next GEMV (a Linear right after launches no rounding kernel and equals the same Linear after
// the two ops). The two-op path is itself checked against the CPU reference elsewhere
// (block_linear_test, cuda_backend_test), so equality carries that over. The scratch the two ops
// would write (gate_up, product) is NaN-poisoned and must stay so: that proves the fused kernel
// ran, not the fallback. Shapes: GGML types of 32- and 256-wide blocks and F8_E4M3, 1 to 8 tokens
// (and 9, past the GEMV: the fallback, which writes the scratch), rows with NaN-poisoned columns
// past their end, matrices of one and of four warps a row, and many launches in a row (each must
// leave its completion counters zero for the next). The seed is printed on failure.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tests/support/ggml_blocks.h"
#include "tests/support/gpu_fixture.h"

namespace kvs {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

void ExpectSame(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      ASSERT_TRUE(std::isnan(a[i]) && std::isnan(b[i])) << what << ": element " << i << ": " << a[i] << " vs " << b[i];
    } else {
      uint32_t ua, ub;
      std::memcpy(&ua, &a[i], 4);
      std::memcpy(&ub, &b[i], 4);
      ASSERT_EQ(ua, ub) << what << ": element " << i << ": " << a[i] << " vs " << b[i];
    }
  }
}

class GemvFusionTest : public testing::GpuFixture<> {
 protected:
  void SetUp() override {
    testing::GpuFixture<>::SetUp();
    if (IsSkipped()) return;
    // GGML blocks kept (the producers round for the next GEMV), buffers made before any step.
    ASSERT_TRUE(gpu_->LinearTakesBlocks(GgmlType::kQ4_0));
    ASSERT_TRUE(gpu_->ReserveWorkspace(16, 4, 8, 64).ok());
    cuda::SetGemvFusion(true);  // off by default (cuda_kernels.h)
  }
  void TearDown() override {
    cuda::SetGemvFusion(false);
    testing::GpuFixture<>::TearDown();
  }
  // A buffer of rows x stride holding `host`.
  DeviceBuffer Floats(const std::vector<float>& host, DType dtype, int64_t rows, int64_t stride) {
    auto buf = gpu_->Allocate(rows * stride * DTypeSize(dtype));
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->UploadFloat(host, buf->View(dtype, rows, stride)).ok());
    return std::move(*buf);
  }
  DeviceBuffer Poisoned(DType dtype, int64_t rows, int64_t stride) {
    return Floats(std::vector<float>(rows * stride, kNaN), dtype, rows, stride);
  }
  std::vector<float> Read(const void* data, DType dtype, int64_t rows, int64_t stride) {
    std::vector<float> out(rows * stride);
    EXPECT_TRUE(gpu_->DownloadFloat(TensorView{const_cast<void*>(data), dtype, rows, stride, stride}, out).ok());
    return out;
  }
  DeviceBuffer Blocks(GgmlType type, int64_t rows, int64_t k, std::mt19937& rng) {
    EXPECT_TRUE(gpu_->LinearTakesBlocks(type));
    const std::vector<uint8_t> host = testing::RandomGgmlBlocks(type, rows, k, rng);
    auto buf = gpu_->Allocate(host.size());
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->CopyToDevice(host.data(), buf->data(), host.size()).ok());
    EXPECT_TRUE(gpu_->ArrangeBlocks(type, buf->data(), rows, k).ok());
    return std::move(*buf);
  }
  // Random bf16 activations [rows, cols], rows `stride` apart, NaN between.
  std::vector<float> Activations(int64_t rows, int64_t cols, int64_t stride, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(rows * stride, kNaN);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t c = 0; c < cols; ++c) x[t * stride + c] = Bf16(normal(rng) * (c % 17 == 0 ? 4.0f : 1.0f));
    return x;
  }
  static float Bf16(float v) { return Bf16BitsToFloat(FloatToBf16Bits(v)); }
  // The next GEMV over `x` (a Q4_0 matrix `next`) into y (NaN-poisoned, made before the op that
  // wrote x: an upload is a write, which makes the backend forget what it holds): its f32 output
  // and how many rounding kernels it launched.
  std::pair<std::vector<float>, int64_t> Next(const TensorView& x, const TensorView& next, DeviceBuffer& y) {
    const int64_t before = cuda::ActivationRoundingsLaunched();
    EXPECT_TRUE(gpu_->Linear(x, next, TensorView{}, y.View(DType::kF32, x.rows, next.rows)).ok());
    const int64_t launched = cuda::ActivationRoundingsLaunched() - before;
    return {Read(y.data(), DType::kF32, x.rows, next.rows), launched};
  }
  static bool AllNaN(const std::vector<float>& v) {
    for (float f : v)
      if (!std::isnan(f)) return false;
    return true;
  }
};

TEST_F(GemvFusionTest, LinearGatedEqualsLinearThenTheActivation) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  // 2I = 4,608 rows: past the narrow-row bound, so one warp a row (the fused form's).
  const int64_t k = 512, inter = 2304;
  const GgmlType next_type = GgmlType::kQ4_0;
  DeviceBuffer next = Blocks(next_type, 40, inter, rng);
  const TensorView next_v{next.data(), DType::kBlocks, 40, inter, inter, next_type};
  for (const GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ6_K, GgmlType::kF8_E4M3}) {
    DeviceBuffer w = Blocks(type, 2 * inter, k, rng);
    const TensorView wv{w.data(), DType::kBlocks, 2 * inter, k, k, type};
    for (const GatedActivation act : {GatedActivation::kSilu, GatedActivation::kGeluTanh}) {
      for (const int64_t tokens : {1, 2, 3, 8, 9}) {
        SCOPED_TRACE(std::string(LookupGgmlType(static_cast<uint32_t>(type))->name) +
                     (act == GatedActivation::kSilu ? ", SwiGLU, " : ", GeGLU, ") + std::to_string(tokens) + " tokens");
        const int64_t x_stride = k + 8, out_stride = inter + 16, gu_stride = 2 * inter + 4;
        DeviceBuffer x = Floats(Activations(tokens, k, x_stride, rng), DType::kBF16, tokens, x_stride);
        const TensorView xv{x.data(), DType::kBF16, tokens, k, x_stride};
        // Two ops.
        DeviceBuffer y_apart = Poisoned(DType::kF32, tokens, next_v.rows);
        DeviceBuffer gu_apart = Poisoned(DType::kBF16, tokens, gu_stride);
        DeviceBuffer out_apart = Poisoned(DType::kBF16, tokens, out_stride);
        const TensorView gu_apart_v{gu_apart.data(), DType::kBF16, tokens, 2 * inter, gu_stride};
        const TensorView out_apart_v{out_apart.data(), DType::kBF16, tokens, inter, out_stride};
        ASSERT_TRUE(gpu_->Linear(xv, wv, TensorView{}, gu_apart_v).ok());
        ASSERT_TRUE((act == GatedActivation::kSilu ? gpu_->SwiGlu(gu_apart_v, out_apart_v)
                                                   : gpu_->GeluGlu(gu_apart_v, out_apart_v))
                        .ok());
        const auto [next_apart, rounded_apart] = Next(out_apart_v, next_v, y_apart);
        // Fused, twice (the counters must be zero again for the second).
        for (int run = 0; run < 2; ++run) {
          SCOPED_TRACE("fused run " + std::to_string(run));
          DeviceBuffer y_fused = Poisoned(DType::kF32, tokens, next_v.rows);
          DeviceBuffer gu = Poisoned(DType::kBF16, tokens, gu_stride);
          DeviceBuffer out = Poisoned(DType::kBF16, tokens, out_stride);
          const TensorView gu_v{gu.data(), DType::kBF16, tokens, 2 * inter, gu_stride};
          const TensorView out_v{out.data(), DType::kBF16, tokens, inter, out_stride};
          ASSERT_TRUE(gpu_->LinearGated(xv, wv, act, gu_v, out_v).ok());
          const bool fuses = tokens <= cuda::kBlockGemvMaxTokens;
          EXPECT_EQ(AllNaN(Read(gu.data(), DType::kBF16, tokens, gu_stride)), fuses)
              << "gate_up is written by the two ops only";
          ExpectSame(Read(out.data(), DType::kBF16, tokens, out_stride),
                     Read(out_apart.data(), DType::kBF16, tokens, out_stride), "activations");
          const auto [next_fused, rounded_fused] = Next(out_v, next_v, y_fused);
          EXPECT_EQ(rounded_fused, fuses ? 0 : 1) << "the next GEMV reads the fused kernel's rounding";
          EXPECT_EQ(rounded_apart, fuses ? 0 : 1);
          ExpectSame(next_fused, next_apart, "the next GEMV's output");
        }
      }
    }
  }
}

TEST_F(GemvFusionTest, LinearAddRmsNormEqualsLinearThenAddRmsNorm) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t k = 768;
  // 4,096 rows: four warps a row; 4,352: one.
  for (const int64_t n : {int64_t{4096}, int64_t{4352}}) {
    std::vector<float> norm_w(n);
    for (float& g : norm_w) g = Bf16(1.0f + 0.25f * normal(rng));
    DeviceBuffer gw = Floats(norm_w, DType::kBF16, 1, n);
    const TensorView norm_v = gw.View(DType::kBF16, 1, n);
    DeviceBuffer next = Blocks(GgmlType::kQ4_0, 24, n, rng);
    const TensorView next_v{next.data(), DType::kBlocks, 24, n, n, GgmlType::kQ4_0};
    for (const GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ5_1, GgmlType::kQ4_K, GgmlType::kF8_E4M3}) {
      DeviceBuffer w = Blocks(type, n, k, rng);
      const TensorView wv{w.data(), DType::kBlocks, n, k, k, type};
      for (const int64_t tokens : {1, 3, 8, 9}) {
        SCOPED_TRACE(std::string(LookupGgmlType(static_cast<uint32_t>(type))->name) + ", n " + std::to_string(n) +
                     ", " + std::to_string(tokens) + " tokens");
        const int64_t x_stride = k + 8, res_stride = n + 4, out_stride = n + 12;
        DeviceBuffer x = Floats(Activations(tokens, k, x_stride, rng), DType::kBF16, tokens, x_stride);
        const TensorView xv{x.data(), DType::kBF16, tokens, k, x_stride};
        std::vector<float> residual(tokens * res_stride, kNaN);
        for (int64_t t = 0; t < tokens; ++t)
          for (int64_t c = 0; c < n; ++c) residual[t * res_stride + c] = 3.0f * normal(rng);
        // Two ops.
        DeviceBuffer y_apart = Poisoned(DType::kF32, tokens, next_v.rows);
        DeviceBuffer res_apart = Floats(residual, DType::kF32, tokens, res_stride);
        DeviceBuffer product = Poisoned(DType::kBF16, tokens, n);
        DeviceBuffer out_apart = Poisoned(DType::kBF16, tokens, out_stride);
        const TensorView res_apart_v{res_apart.data(), DType::kF32, tokens, n, res_stride};
        const TensorView out_apart_v{out_apart.data(), DType::kBF16, tokens, n, out_stride};
        ASSERT_TRUE(gpu_->Linear(xv, wv, TensorView{}, product.View(DType::kBF16, tokens, n)).ok());
        ASSERT_TRUE(
            gpu_->AddRmsNorm(res_apart_v, product.View(DType::kBF16, tokens, n), norm_v, 1e-5f, out_apart_v).ok());
        const auto [next_apart, rounded_apart] = Next(out_apart_v, next_v, y_apart);
        for (int run = 0; run < 2; ++run) {
          SCOPED_TRACE("fused run " + std::to_string(run));
          DeviceBuffer y_fused = Poisoned(DType::kF32, tokens, next_v.rows);
          DeviceBuffer res = Floats(residual, DType::kF32, tokens, res_stride);
          DeviceBuffer scratch = Poisoned(DType::kBF16, tokens, n);
          DeviceBuffer out = Poisoned(DType::kBF16, tokens, out_stride);
          const TensorView res_v{res.data(), DType::kF32, tokens, n, res_stride};
          const TensorView out_v{out.data(), DType::kBF16, tokens, n, out_stride};
          ASSERT_TRUE(
              gpu_->LinearAddRmsNorm(xv, wv, scratch.View(DType::kBF16, tokens, n), res_v, norm_v, 1e-5f, out_v).ok());
          const bool fuses = tokens <= cuda::kBlockGemvMaxTokens;
          EXPECT_EQ(AllNaN(Read(scratch.data(), DType::kBF16, tokens, n)), fuses)
              << "the product is written by the two ops only";
          ExpectSame(Read(res.data(), DType::kF32, tokens, res_stride),
                     Read(res_apart.data(), DType::kF32, tokens, res_stride), "residual");
          ExpectSame(Read(out.data(), DType::kBF16, tokens, out_stride),
                     Read(out_apart.data(), DType::kBF16, tokens, out_stride), "normalized");
          const auto [next_fused, rounded_fused] = Next(out_v, next_v, y_fused);
          EXPECT_EQ(rounded_fused, fuses ? 0 : 1) << "the next GEMV reads the fused kernel's rounding";
          ExpectSame(next_fused, next_apart, "the next GEMV's output");
        }
      }
    }
  }
}

// A decode layer's chain as the runner issues it (fused ops reading each other's roundings, which
// alternate between the backend's two buffers) equals the same chain with fusion off.
TEST_F(GemvFusionTest, ChainedFusedOpsEqualTheOpsApart) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t hidden = 1024, inter = 2560, tokens = 2;
  DeviceBuffer o = Blocks(GgmlType::kQ4_K, hidden, hidden, rng);
  DeviceBuffer gate_up = Blocks(GgmlType::kQ4_0, 2 * inter, hidden, rng);
  DeviceBuffer down = Blocks(GgmlType::kQ6_K, hidden, inter, rng);
  const TensorView ov{o.data(), DType::kBlocks, hidden, hidden, hidden, GgmlType::kQ4_K};
  const TensorView guv{gate_up.data(), DType::kBlocks, 2 * inter, hidden, hidden, GgmlType::kQ4_0};
  const TensorView dv{down.data(), DType::kBlocks, hidden, inter, inter, GgmlType::kQ6_K};
  std::vector<float> norm_w(hidden);
  for (float& g : norm_w) g = Bf16(1.0f + 0.25f * normal(rng));
  DeviceBuffer gw = Floats(norm_w, DType::kBF16, 1, hidden);
  const std::vector<float> attn = Activations(tokens, hidden, hidden, rng);
  std::vector<float> residual(tokens * hidden);
  for (float& r : residual) r = 2.0f * normal(rng);
  std::vector<std::vector<float>> results[2];
  for (const bool fused : {false, true}) {
    cuda::SetGemvFusion(fused);
    DeviceBuffer a = Floats(attn, DType::kBF16, tokens, hidden);
    DeviceBuffer res = Floats(residual, DType::kF32, tokens, hidden);
    DeviceBuffer hid = Poisoned(DType::kBF16, tokens, hidden), normed = Poisoned(DType::kBF16, tokens, hidden);
    DeviceBuffer gu = Poisoned(DType::kBF16, tokens, 2 * inter), act = Poisoned(DType::kBF16, tokens, inter);
    const TensorView res_v = res.View(DType::kF32, tokens, hidden),
                     normed_v = normed.View(DType::kBF16, tokens, hidden);
    const TensorView act_v = act.View(DType::kBF16, tokens, inter), hid_v = hid.View(DType::kBF16, tokens, hidden);
    const TensorView norm_v = gw.View(DType::kBF16, 1, hidden);
    for (int layer = 0; layer < 3; ++layer) {
      ASSERT_TRUE(
          gpu_->LinearAddRmsNorm(a.View(DType::kBF16, tokens, hidden), ov, hid_v, res_v, norm_v, 1e-5f, normed_v).ok());
      ASSERT_TRUE(
          gpu_->LinearGated(normed_v, guv, GatedActivation::kSilu, gu.View(DType::kBF16, tokens, 2 * inter), act_v)
              .ok());
      ASSERT_TRUE(gpu_->LinearAddRmsNorm(act_v, dv, hid_v, res_v, norm_v, 1e-5f, normed_v).ok());
      // The next layer's attention output: this one's normed rows (through a copy, as attention writes).
      ASSERT_TRUE(gpu_->CopyOnDevice(normed.data(), a.data(), tokens * hidden * 2).ok());
    }
    results[fused].push_back(Read(res.data(), DType::kF32, tokens, hidden));
    results[fused].push_back(Read(normed.data(), DType::kBF16, tokens, hidden));
    results[fused].push_back(Read(act.data(), DType::kBF16, tokens, inter));
  }
  ExpectSame(results[1][0], results[0][0], "residual");
  ExpectSame(results[1][1], results[0][1], "normalized");
  ExpectSame(results[1][2], results[0][2], "activations");
}

}  // namespace
}  // namespace kvs
