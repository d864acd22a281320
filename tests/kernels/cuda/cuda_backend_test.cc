// Every CUDA op against the CPU reference on fresh random inputs (rounded to bf16 so both sides
// see the same values), outputs poisoned with NaN before each run, each output element checked
// against a bf16 tolerance (the seed printed on a failure; ||gpu - cpu|| / ||cpu|| reported
// beside it). Skips with a reason where no GPU is visible.
#include "kernels/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tests/support/attention_batch.h"
#include "tests/support/elementwise_check.h"
#include "tests/support/ggml_blocks.h"
#include "tests/support/gpu_fixture.h"

namespace kvs {
namespace {

constexpr double kBf16Tolerance = 1e-2;  // bf16 operands, fp32 accumulation

class CudaOpsTest : public testing::GpuFixture<> {
 protected:

  std::vector<float> Random(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = Bf16BitsToFloat(FloatToBf16Bits(normal(rng_)));
    return v;
  }
  // A device tensor of `dtype` holding `host` (or NaN when host is empty).
  DeviceBuffer Upload(const std::vector<float>& host, DType dtype, int64_t rows, int64_t cols) {
    auto buf = gpu_->Allocate(rows * cols * DTypeSize(dtype));
    EXPECT_TRUE(buf.ok());
    std::vector<float> v = host.empty() ? std::vector<float>(rows * cols, std::numeric_limits<float>::quiet_NaN()) : host;
    EXPECT_TRUE(gpu_->UploadFloat(v, buf->View(dtype, rows, cols)).ok());
    return std::move(*buf);
  }
  DeviceBuffer UploadInts(const std::vector<int32_t>& v) {
    auto buf = gpu_->Allocate(std::max<size_t>(v.size(), 1) * 4);
    EXPECT_TRUE(gpu_->CopyToDevice(v.data(), buf->data(), v.size() * 4).ok());
    return std::move(*buf);
  }
  std::vector<float> Download(const DeviceBuffer& b, DType dtype, int64_t rows, int64_t cols) {
    std::vector<float> out(rows * cols);
    EXPECT_TRUE(gpu_->DownloadFloat(b.View(dtype, rows, cols), out).ok());
    return out;
  }
  static double RelError(const std::vector<float>& got, const std::vector<float>& want) {
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(got[i])) return std::numeric_limits<double>::infinity();
      num += (got[i] - want[i]) * (got[i] - want[i]);
      den += want[i] * want[i];
    }
    return std::sqrt(num / std::max(den, 1e-30));
  }
  static TensorView F32(std::vector<float>& v, int64_t rows, int64_t cols) {
    return TensorView::Contiguous(v.data(), DType::kF32, rows, cols);
  }

  // The shared element-by-element rule (tests/support/elementwise_check.h) with this test's seed.
  double ExpectElementwise(const std::vector<float>& got, const std::vector<float>& want, double abs, double rel,
                           const std::string& what) {
    return testing::ExpectElementwise(got, want, abs, rel, what, seed_);
  }
  double ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rel, const std::string& what) {
    return testing::ExpectClose(got, want, rel, what, seed_);
  }
  // Scale of a random f32 [rows, cols] on the GPU equals the CPU's exactly (one multiply each).
  void ExpectScaleMatchesCpu(int64_t rows, int64_t cols, float s) {
    auto r = Random(rows * cols, 3.0f);
    std::vector<float> cr = r;
    ASSERT_TRUE(cpu_.Scale(F32(cr, rows, cols), s).ok());
    auto gr = Upload(r, DType::kF32, rows, cols);
    ASSERT_TRUE(gpu_->Scale(gr.View(DType::kF32, rows, cols), s).ok());
    EXPECT_EQ(Download(gr, DType::kF32, rows, cols), cr);
  }

  const uint32_t seed_ = std::random_device{}();
  std::mt19937 rng_{seed_};
  CpuBackend cpu_{size_t{16} << 30};
};

TEST_F(CudaOpsTest, LinearMatchesCpuForOddShapesWithBiasAndF32Out) {
  // Up to kBf16GemvMaxTokens rows take the bf16 GEMV where k is a multiple of 8 (bf16_gemv.cu),
  // the rest cuBLAS; each shape runs both ways. The input's rows are strided and the output's
  // padding columns are NaN: they must stay NaN. GEMV shapes for each of its row splits (a warp a
  // row past 32K rows; 16 warps a row from k = 8192; else 4), with rows shorter than a warp's
  // chunk, k 8 past a chunk, and odd row counts.
  for (auto [t, k, n] : {std::tuple{1, 576, 1536},
                         {17, 97, 54},
                         {64, 4096, 1024},
                         {3, 64, 49152},
                         {8, 4096, 1031},
                         {9, 4096, 1024},
                         {5, 97, 33},
                         {2, 4104, 4097},
                         {1, 8, 5},
                         {1, 4104, 4097},
                         {1, 4096, 1031},
                         {1, 64, 49153},
                         {1, 72, 40000},
                         {1, 14336, 67},
                         {1, 8200, 37},
                         {1, 96, 7}}) {
    auto x = Random(t * k), w = Random(n * k, 0.05f), b = Random(n);
    std::vector<float> want(t * n);
    ASSERT_TRUE(cpu_.Linear(F32(x, t, k), F32(w, n, k), F32(b, 1, n), F32(want, t, n)).ok());
    const int64_t x_stride = k + 8, out_stride = n + 3;
    std::vector<float> x_padded(t * x_stride, 1e4f);  // padding that would show if read
    for (int r = 0; r < t; ++r) std::copy_n(&x[r * k], k, &x_padded[r * x_stride]);
    for (const bool gemv : {true, false}) {
      cuda::SetBf16GemvOn(gemv);
      for (DType out_dtype : {DType::kBF16, DType::kF32}) {
        auto gx = Upload(x_padded, DType::kBF16, t, x_stride), gw = Upload(w, DType::kBF16, n, k),
             gb = Upload(b, DType::kBF16, 1, n);
        auto gy = Upload({}, out_dtype, t, out_stride);
        // The shapes meant for the GEMV do take it (else this would compare cuBLAS with itself).
        EXPECT_EQ(cuda::Bf16GemvTakes(gw.data(), n, k, gx.data(), x_stride, t),
                  gemv && t <= cuda::kBf16GemvMaxTokens && k % 8 == 0)
            << t << "x" << k << "x" << n;
        ASSERT_TRUE(gpu_->Linear(TensorView{gx.data(), DType::kBF16, t, k, x_stride}, gw.View(DType::kBF16, n, k),
                                 gb.View(DType::kBF16, 1, n), TensorView{gy.data(), out_dtype, t, n, out_stride})
                        .ok());
        const std::vector<float> padded = Download(gy, out_dtype, t, out_stride);
        std::vector<float> got(t * n);
        for (int r = 0; r < t; ++r) {
          std::copy_n(&padded[r * out_stride], n, &got[r * n]);
          for (int c = n; c < out_stride; ++c) {
            ASSERT_TRUE(std::isnan(padded[r * out_stride + c])) << "padding written at " << r << "," << c;
          }
        }
        const std::string what = absl::StrFormat("Linear %dx%dx%d (GEMV %s, %s out)", t, k, n, gemv ? "on" : "off",
                                                 std::string(DTypeName(out_dtype)));
        const double worst = ExpectClose(got, want, kBf16Tolerance, what);
        std::printf("%s: rel err %.2e, worst element %.2f of its tolerance\n", what.c_str(), RelError(got, want),
                    worst);
      }
    }
    cuda::SetBf16GemvOn(true);
  }
}

TEST_F(CudaOpsTest, NormsMatchCpuOnVectorAndScalarPaths) {
  // The float4 path and the scalar fallback at a decode step's few rows (512 threads a row), then
  // a prompt's many rows, where the float4 path may take 128, 256 or 512 threads by width
  // (SetNormRowThreadsFewest; both ways).
  const std::pair<int64_t, int64_t> shapes[] = {{5, 4096},   {5, 97},      {300, 4096}, {300, 576},
                                                {257, 8192}, {256, 16384}, {300, 97}};
  for (const bool fewest : {false, true}) {
    cuda::SetNormRowThreadsFewest(fewest);
    for (const auto& [t, h] : shapes) {
      SCOPED_TRACE(absl::StrFormat("%d rows x %d%s", t, h, fewest ? ", fewest threads a row" : ""));
      auto res = Random(t * h, 3.0f), upd = Random(t * h), w = Random(h, 0.5f);
      std::vector<float> cres = res, cout(t * h), cplain(t * h);
      ASSERT_TRUE(cpu_.RmsNorm(F32(res, t, h), F32(w, 1, h), 1e-5f, F32(cplain, t, h)).ok());
      ASSERT_TRUE(cpu_.AddRmsNorm(F32(cres, t, h), F32(upd, t, h), F32(w, 1, h), 1e-5f, F32(cout, t, h)).ok());
      auto gres = Upload(res, DType::kF32, t, h), gupd = Upload(upd, DType::kBF16, t, h),
           gw = Upload(w, DType::kBF16, 1, h);
      auto gplain = Upload({}, DType::kBF16, t, h), gout = Upload({}, DType::kBF16, t, h);
      ASSERT_TRUE(gpu_->RmsNorm(gres.View(DType::kF32, t, h), gw.View(DType::kBF16, 1, h), 1e-5f,
                                gplain.View(DType::kBF16, t, h))
                      .ok());
      ExpectClose(Download(gplain, DType::kBF16, t, h), cplain, kBf16Tolerance, "cplain");
      ASSERT_TRUE(gpu_->AddRmsNorm(gres.View(DType::kF32, t, h), gupd.View(DType::kBF16, t, h),
                                   gw.View(DType::kBF16, 1, h), 1e-5f, gout.View(DType::kBF16, t, h))
                      .ok());
      ExpectClose(Download(gres, DType::kF32, t, h), cres, 1e-6, "cres (f32 residual)");
      ExpectClose(Download(gout, DType::kBF16, t, h), cout, kBf16Tolerance, "cout");
    }
  }
  cuda::ResetNormRowThreads();
}

TEST_F(CudaOpsTest, NormsRopeSwiGluEmbeddingMatchCpu) {
  const int64_t t = 13, h = 576;
  auto res = Random(t * h, 3.0f), upd = Random(t * h), w = Random(h, 0.5f);
  // AddRmsNorm: residual += x; out = norm(residual).
  std::vector<float> cres = res, cout(t * h);
  ASSERT_TRUE(cpu_.AddRmsNorm(F32(cres, t, h), F32(upd, t, h), F32(w, 1, h), 1e-5f, F32(cout, t, h)).ok());
  auto gres = Upload(res, DType::kF32, t, h), gupd = Upload(upd, DType::kBF16, t, h), gw = Upload(w, DType::kBF16, 1, h);
  auto gout = Upload({}, DType::kBF16, t, h);
  ASSERT_TRUE(gpu_->AddRmsNorm(gres.View(DType::kF32, t, h), gupd.View(DType::kBF16, t, h), gw.View(DType::kBF16, 1, h),
                               1e-5f, gout.View(DType::kBF16, t, h)).ok());
  ExpectClose(Download(gres, DType::kF32, t, h), cres, 1e-6, "cres (f32 residual)");
  ExpectClose(Download(gout, DType::kBF16, t, h), cout, kBf16Tolerance, "cout");

  // Rope at large positions with llama3-scaled frequencies: 13 tokens at head_dim 64 take 8 pairs
  // a thread (16-byte accesses), head_dim 36 one pair a thread.
  const int heads = 9;
  for (const int dim : {64, 36}) {
    SCOPED_TRACE("rope, head_dim " + std::to_string(dim));
    auto x = Random(t * heads * dim);
    std::vector<int32_t> pos(t);
    for (int i = 0; i < t; ++i) pos[i] = static_cast<int32_t>(rng_() % 200000);
    std::vector<float> inv(dim / 2);
    for (int i = 0; i < dim / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / dim) / (i > 20 ? 8.0f : 1.0f);
    std::vector<float> cx = x;
    ASSERT_TRUE(cpu_.Rope(F32(cx, t, heads * dim), heads, pos.data(), RopeTable{inv.data(), dim}).ok());
    auto gx = Upload(x, DType::kBF16, t, heads * dim);
    auto gpos = UploadInts(pos);
    auto ginv = Upload(inv, DType::kF32, 1, dim / 2);
    ASSERT_TRUE(
        gpu_->Rope(gx.View(DType::kBF16, t, heads * dim), heads, gpos.as<int32_t>(), RopeTable{ginv.as<float>(), dim})
            .ok());
    const std::vector<float> got = Download(gx, DType::kBF16, t, heads * dim);
    ExpectClose(got, cx, kBf16Tolerance, "cx");
  }

  // SwiGLU: 8 outputs a thread where the row allows 16-byte accesses (1536), else one (1540).
  for (const int64_t inter : {1536, 1540}) {
    SCOPED_TRACE("SwiGLU, inter " + std::to_string(inter));
    auto gu = Random(t * 2 * inter, 2.0f);
    std::vector<float> cact(t * inter);
    ASSERT_TRUE(cpu_.SwiGlu(F32(gu, t, 2 * inter), F32(cact, t, inter)).ok());
    auto ggu = Upload(gu, DType::kBF16, t, 2 * inter), gact = Upload({}, DType::kBF16, t, inter);
    ASSERT_TRUE(gpu_->SwiGlu(ggu.View(DType::kBF16, t, 2 * inter), gact.View(DType::kBF16, t, inter)).ok());
    ExpectClose(Download(gact, DType::kBF16, t, inter), cact, kBf16Tolerance, "cact");
  }

  // Embedding into the f32 residual: exact (bf16 table values).
  const int64_t vocab = 1000;
  auto table = Random(vocab * h);
  std::vector<int32_t> ids(t);
  for (auto& id : ids) id = static_cast<int32_t>(rng_() % vocab);
  std::vector<float> cemb(t * h);
  ASSERT_TRUE(cpu_.Embedding(ids.data(), F32(table, vocab, h), 0, F32(cemb, t, h)).ok());
  auto gtable = Upload(table, DType::kBF16, vocab, h), gids = UploadInts(ids), gemb = Upload({}, DType::kF32, t, h);
  ASSERT_TRUE(gpu_->Embedding(gids.as<int32_t>(), gtable.View(DType::kBF16, vocab, h), 0, gemb.View(DType::kF32, t, h)).ok());
  EXPECT_EQ(Download(gemb, DType::kF32, t, h), cemb);

  // A vocab shard (rows of ids 300..699): other ids give zero rows, on both backends alike.
  std::vector<float> shard(table.begin() + 300 * h, table.begin() + 700 * h), cshard(t * h);
  ASSERT_TRUE(cpu_.Embedding(ids.data(), F32(shard, 400, h), 300, F32(cshard, t, h)).ok());
  auto gs = Upload(shard, DType::kBF16, 400, h);
  ASSERT_TRUE(gpu_->Embedding(gids.as<int32_t>(), gs.View(DType::kBF16, 400, h), 300, gemb.View(DType::kF32, t, h)).ok());
  EXPECT_EQ(Download(gemb, DType::kF32, t, h), cshard);
}

// The ops of Qwen3 and Gemma 3: per-head q/k norms on a strided view (q inside qkv), a bf16
// row norm in place (Gemma's post-norms), GeGLU and the embedding scale.
TEST_F(CudaOpsTest, HeadNormsGeluGluAndScaleMatchCpuElementwise) {
  const int64_t t = 11, heads = 6, kv_heads = 2, dim = 128, width = (heads + 2 * kv_heads) * dim;
  auto qkv = Random(t * width, 2.0f), w = Random(dim, 0.5f);
  std::vector<float> cqkv = qkv;
  ASSERT_TRUE(cpu_.HeadRmsNorm(F32(cqkv, t, width).Cols(0, heads * dim), static_cast<int32_t>(heads), F32(w, 1, dim),
                               1e-6f).ok());
  auto gqkv = Upload(qkv, DType::kBF16, t, width), gw = Upload(w, DType::kBF16, 1, dim);
  ASSERT_TRUE(gpu_->HeadRmsNorm(gqkv.View(DType::kBF16, t, width).Cols(0, heads * dim), static_cast<int32_t>(heads),
                                gw.View(DType::kBF16, 1, dim), 1e-6f).ok());
  // The k and v columns are untouched on both sides (the CPU's are the inputs).
  const double q_worst = ExpectElementwise(Download(gqkv, DType::kBF16, t, width), cqkv, 1e-2, 1e-2, "HeadRmsNorm");

  const int64_t h = 640;
  auto x = Random(t * h, 3.0f), nw = Random(h, 0.5f);
  std::vector<float> cx = x;
  ASSERT_TRUE(cpu_.RmsNorm(F32(cx, t, h), F32(nw, 1, h), 1e-6f, F32(cx, t, h)).ok());
  auto gx = Upload(x, DType::kBF16, t, h), gnw = Upload(nw, DType::kBF16, 1, h);
  ASSERT_TRUE(gpu_->RmsNorm(gx.View(DType::kBF16, t, h), gnw.View(DType::kBF16, 1, h), 1e-6f, gx.View(DType::kBF16, t, h)).ok());
  const double norm_worst = ExpectElementwise(Download(gx, DType::kBF16, t, h), cx, 1e-2, 1e-2, "RmsNorm bf16 in place");

  const int64_t inter = 1000;
  auto gu = Random(t * 2 * inter, 2.0f);
  std::vector<float> cact(t * inter);
  ASSERT_TRUE(cpu_.GeluGlu(F32(gu, t, 2 * inter), F32(cact, t, inter)).ok());
  auto ggu = Upload(gu, DType::kBF16, t, 2 * inter), gact = Upload({}, DType::kBF16, t, inter);
  ASSERT_TRUE(gpu_->GeluGlu(ggu.View(DType::kBF16, t, 2 * inter), gact.View(DType::kBF16, t, inter)).ok());
  const double gelu_worst = ExpectElementwise(Download(gact, DType::kBF16, t, inter), cact, 1e-2, 1e-2, "GeluGlu");

  ExpectScaleMatchesCpu(t, h, 25.298221f);
  std::printf("worst element / tolerance: HeadRmsNorm %.2f, RmsNorm bf16 %.2f, GeluGlu %.2f\n", q_worst, norm_worst,
              gelu_worst);
}

// The kernels with a row of blocks per matrix row (SwiGLU / GeGLU, Scale, the bias add) on more
// rows than one grid's y dimension holds (65,535): a prompt step of 64K tokens. Every row against
// the CPU, the last ones (the second launch) included.
TEST_F(CudaOpsTest, RowKernelsTakeMoreRowsThanOneGridHolds) {
  const int64_t t = 65537, inter = 8, cols = 4;  // outputs are uploaded NaN: an unwritten row fails
  auto gu = Random(t * 2 * inter, 2.0f);
  std::vector<float> cact(t * inter);
  ASSERT_TRUE(cpu_.SwiGlu(F32(gu, t, 2 * inter), F32(cact, t, inter)).ok());
  auto ggu = Upload(gu, DType::kBF16, t, 2 * inter);
  auto gact = Upload({}, DType::kBF16, t, inter);
  ASSERT_TRUE(gpu_->SwiGlu(ggu.View(DType::kBF16, t, 2 * inter), gact.View(DType::kBF16, t, inter)).ok());
  ExpectElementwise(Download(gact, DType::kBF16, t, inter), cact, 1e-2, 1e-2, "SwiGLU over 65,537 rows");

  ExpectScaleMatchesCpu(t, cols, 0.5f);

  // The bias add, through a Linear with a bias: x [t, 32] . w [cols, 32]^T + b. The GEMM's output
  // is rounded to bf16 before the bias is added, so x . w is kept small beside b: with unit
  // inputs (|x . w| ~ 6) an output near 0 carried the product's rounding (2^-8 of ~4) past the
  // output's tolerance (first run on an H100: 0.406 against 0.392).
  const int64_t k = 32;
  auto x = Random(t * k, 0.25f), w = Random(cols * k, 0.25f), b = Random(cols, 4.0f);
  std::vector<float> cy(t * cols);
  ASSERT_TRUE(cpu_.Linear(F32(x, t, k), F32(w, cols, k), F32(b, 1, cols), F32(cy, t, cols)).ok());
  auto gx = Upload(x, DType::kBF16, t, k), gw = Upload(w, DType::kBF16, cols, k), gb = Upload(b, DType::kBF16, 1, cols);
  auto gy = Upload({}, DType::kBF16, t, cols);
  ASSERT_TRUE(gpu_->Linear(gx.View(DType::kBF16, t, k), gw.View(DType::kBF16, cols, k), gb.View(DType::kBF16, 1, cols),
                           gy.View(DType::kBF16, t, cols))
                  .ok());
  ExpectElementwise(Download(gy, DType::kBF16, t, cols), cy, 1e-2, 1e-2, "Linear + bias over 65,537 rows");
}

// The attention contract is one table (cuda_kernels.h) read by dispatch and, through
// KvDTypeProblem, by KvCache::Create at load: checked here without a GPU.
TEST(CudaAttentionContractTest, OneTableSaysWhichHeadDimsRun) {
  for (int32_t d : cuda::kAttentionHeadDims) EXPECT_TRUE(cuda::AttentionSupports(KvDType::kBF16, d)) << d;
  for (int32_t d : cuda::kEncodedKvHeadDims) {
    for (KvDType t : {KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4}) {
      EXPECT_TRUE(cuda::AttentionSupports(t, d)) << d;
    }
  }
  // bf16 caches: other multiples of 32 up to 256 (Gemma 3's 256, 96) run on the generic kernel,
  // which also takes every sliding-window layer of a bf16 or fp16 cache.
  for (int32_t d : {96, 160, 256}) EXPECT_TRUE(cuda::AttentionSupports(KvDType::kBF16, d)) << d;
  for (int32_t d : {32, 64, 96, 128, 256}) EXPECT_TRUE(cuda::WindowAttentionSupports(KvDType::kBF16, d)) << d;
  EXPECT_FALSE(cuda::WindowAttentionSupports(KvDType::kF16, 128));  // not yet run on a GPU: refused
  EXPECT_FALSE(cuda::WindowAttentionSupports(KvDType::kFP8, 128));
  EXPECT_FALSE(cuda::WindowAttentionSupports(KvDType::kBF16, 16));
  // Head dims no kernel takes are refused, not run into.
  for (int32_t d : {8, 48, 80, 112, 288, 512}) EXPECT_FALSE(cuda::AttentionSupports(KvDType::kBF16, d)) << d;
  EXPECT_FALSE(cuda::AttentionSupports(KvDType::kF16, 32));
  EXPECT_FALSE(cuda::AttentionSupports(KvDType::kF16, 256));
  EXPECT_FALSE(cuda::AttentionSupports(KvDType::kF32, 128));
}

struct AttnShape {
  int32_t q_heads, kv_heads, head_dim, block_size;
  std::vector<int32_t> context_lens, query_lens;
  int32_t window = 0;  // a sliding-window layer's (PagedKvView::window)
};

class CudaAttentionTest : public CudaOpsTest, public ::testing::WithParamInterface<AttnShape> {};

TEST_P(CudaAttentionTest, PagedAttentionMatchesCpuWithRandomBlockTablesAndNaNPoison) {
  const AttnShape& c = GetParam();
  const int32_t seqs = static_cast<int32_t>(c.context_lens.size());
  const int64_t width = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  int32_t needed = 0, max_blocks = 0;
  for (int32_t len : c.context_lens) {
    needed += (len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size);
  }
  const int32_t num_blocks = needed + 7;
  const int64_t slots = static_cast<int64_t>(num_blocks) * c.block_size;
  // Host copies of the cache: NaN everywhere except the slots the block tables map.
  std::vector<float> kc(slots * width, std::numeric_limits<float>::quiet_NaN()), vc = kc;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng_);
  std::vector<int32_t> table(seqs * max_blocks, 0), query_start{0}, context_len;
  int32_t next = 0, tokens = 0;
  for (int32_t s = 0; s < seqs; ++s) {
    const int32_t nb = (c.context_lens[s] + c.block_size - 1) / c.block_size;
    for (int32_t j = 0; j < nb; ++j) table[s * max_blocks + j] = perm[next++];
    for (int32_t p = 0; p < c.context_lens[s]; ++p) {
      const int64_t slot = static_cast<int64_t>(table[s * max_blocks + p / c.block_size]) * c.block_size + p % c.block_size;
      auto kv = Random(2 * width);
      std::memcpy(&kc[slot * width], kv.data(), width * 4);
      std::memcpy(&vc[slot * width], kv.data() + width, width * 4);
    }
    tokens += c.query_lens[s];
    query_start.push_back(tokens);
    context_len.push_back(c.context_lens[s]);
  }
  const int64_t qw = static_cast<int64_t>(c.q_heads) * c.head_dim;
  auto q = Random(tokens * qw);
  const AttentionBatch batch = testing::HostAttentionBatch(query_start, context_len, table, max_blocks, c.query_lens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<float> want(tokens * qw);
  PagedKvView ccache{kc.data(), vc.data(), KvDType::kF32, num_blocks, c.block_size, c.kv_heads, c.head_dim, c.window};
  ASSERT_TRUE(cpu_.PagedAttention(F32(q, tokens, qw), ccache, batch, scale, F32(want, tokens, qw)).ok());

  auto gk = Upload(kc, DType::kBF16, slots, width), gv = Upload(vc, DType::kBF16, slots, width);
  auto gq = Upload(q, DType::kBF16, tokens, qw), gout = Upload({}, DType::kBF16, tokens, qw);
  auto gqs = UploadInts(query_start), gctx = UploadInts(context_len), gtab = UploadInts(table);
  AttentionBatch gbatch = batch;
  gbatch.query_start = gqs.as<int32_t>();
  gbatch.context_len = gctx.as<int32_t>();
  gbatch.block_table = gtab.as<int32_t>();
  ASSERT_TRUE(gpu_->ReserveWorkspace(tokens, seqs, c.q_heads, c.head_dim).ok());
  PagedKvView gcache{gk.data(), gv.data(), KvDType::kBF16, num_blocks, c.block_size, c.kv_heads, c.head_dim, c.window};
  const absl::Status st = gpu_->PagedAttention(gq.View(DType::kBF16, tokens, qw), gcache, gbatch, scale,
                                               gout.View(DType::kBF16, tokens, qw));
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE(gpu_->Synchronize().ok());
  const std::vector<float> got = Download(gout, DType::kBF16, tokens, qw);
  for (float v : got) ASSERT_FALSE(std::isnan(v)) << "unwritten output or a read of an unmapped slot";
  const double err = RelError(got, want);
  EXPECT_LT(err, kBf16Tolerance) << "seed " << seed_;
  const double worst = ExpectElementwise(got, want, 1e-2, 2e-2, "attention output");
  std::printf("attention Hq=%d Hk=%d D=%d bs=%d window=%d seqs=%d tokens=%d max_ctx=%d: rel err %.2e, worst element "
              "%.2f of its tolerance\n",
              c.q_heads, c.kv_heads, c.head_dim, c.block_size, c.window, seqs, tokens, batch.max_context_len, err, worst);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttentionTest,
    ::testing::Values(
        AttnShape{9, 3, 64, 16, {17, 54, 97}, {1, 54, 3}},                // SmolLM2: GQA 3, prefill + decode
        AttnShape{8, 8, 128, 1, {5, 1, 13}, {5, 1, 2}},                   // MHA, page size 1
        AttnShape{32, 8, 128, 16, {4096, 1000, 33, 1}, {1, 1, 1, 1}},     // Llama-3-8B decode, ragged
        AttnShape{32, 4, 64, 7, {300, 33}, {300, 1}},                     // GQA 8, odd page, long prefill
        AttnShape{4, 1, 32, 3, {1, 2, 3, 4, 5, 6}, {1, 1, 3, 1, 5, 2}},   // MQA tiny contexts
        AttnShape{4, 2, 16, 5, {40, 41}, {40, 7}},                        // head_dim 16
        AttnShape{32, 8, 128, 16, {32768}, {1}},                          // B=1 L=32K: split-K
        AttnShape{32, 8, 128, 16, {131072}, {1}},                         // B=1 L=128K
        AttnShape{12, 4, 128, 16, {2048}, {2048}},                        // whole-prompt causal prefill
        // Decode-only steps take the register kernel: groups 3 (padded to 4), 1 and 2.
        AttnShape{9, 3, 64, 16, {17, 540, 1, 3000}, {1, 1, 1, 1}},
        AttnShape{8, 8, 32, 5, {77, 1234}, {1, 1}},
        AttnShape{4, 2, 16, 1, {300, 2}, {1, 1}},
        AttnShape{64, 8, 128, 16, {1000, 5}, {1, 1}},                     // group 8, decode
        // The generic kernel: Gemma 3's windowed layers and head dims outside the tiled list.
        AttnShape{4, 1, 256, 16, {700, 37, 600}, {700, 1, 1}, 512},       // Gemma 3 270M local: prefill + decode
        AttnShape{4, 2, 32, 1, {60, 9, 23}, {60, 1, 5}, 7},               // tiny window, page size 1, chunk offsets
        AttnShape{32, 8, 128, 16, {4096, 100}, {1, 100}, 1024},           // window on a tiled head dim
        AttnShape{4, 1, 256, 16, {3000, 20}, {1, 20}},                    // Gemma 3 global layer (head_dim 256)
        AttnShape{8, 2, 96, 7, {130, 40}, {30, 40}},                      // head_dim 96, chunk over earlier keys
        // Rows enough for the generic kernel to group a GQA group's heads in one block (G = 4, 2).
        AttnShape{4, 1, 256, 16, {1100, 30}, {1100, 1}, 512},             // Gemma 3 local layer, long prefill
        AttnShape{8, 4, 64, 16, {300, 64}, {300, 3}, 100}),               // G = 2, window
    [](const ::testing::TestParamInfo<AttnShape>& info) {
      const AttnShape& s = info.param;
      int32_t max_ctx = 0;
      for (int32_t l : s.context_lens) max_ctx = std::max(max_ctx, l);
      return "Hq" + std::to_string(s.q_heads) + "_Hk" + std::to_string(s.kv_heads) + "_D" + std::to_string(s.head_dim) +
             "_bs" + std::to_string(s.block_size) + "_ctx" + std::to_string(max_ctx) +
             (s.window > 0 ? "_w" + std::to_string(s.window) : "") + "_" + std::to_string(info.index);
    });

TEST_F(CudaOpsTest, ArgmaxRowsMatchesCpuIncludingTies) {
  const int64_t rows = 37, vocab = 128256;
  auto logits = Random(rows * vocab, 3.0f);
  logits[5 * vocab + 100] = 50.0f;  // a tie: the lower index must win
  logits[5 * vocab + 90000] = 50.0f;
  std::vector<int32_t> want(rows);
  std::vector<float> want_values(rows);
  ASSERT_TRUE(cpu_.ArgmaxRows(F32(logits, rows, vocab), 1000, want.data(), want_values.data()).ok());
  auto g = Upload(logits, DType::kF32, rows, vocab);
  auto ids = UploadInts(std::vector<int32_t>(rows, -1));
  auto values = Upload({}, DType::kF32, 1, rows);
  ASSERT_TRUE(gpu_->ArgmaxRows(g.View(DType::kF32, rows, vocab), 1000, ids.as<int32_t>(), values.as<float>()).ok());
  std::vector<int32_t> got(rows);
  ASSERT_TRUE(gpu_->CopyToHost(ids.data(), got.data(), rows * 4).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(got[5], 1100);
  EXPECT_EQ(Download(values, DType::kF32, 1, rows), want_values);
}

// Random rows of a plain float GGML type (F32, F16, BF16), `elems` values each.
std::vector<uint8_t> RandomFloatRows(GgmlType type, int64_t rows, int64_t elems, std::mt19937& rng) {
  const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
  std::vector<uint8_t> bytes(rows * elems * info.block_bytes);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < rows * elems; ++i) {
    const float v = normal(rng);
    const uint16_t h = type == GgmlType::kF16 ? FloatToFp16Bits(v) : FloatToBf16Bits(v);
    std::memcpy(bytes.data() + i * info.block_bytes, type == GgmlType::kF32 ? static_cast<const void*>(&v) : &h,
                info.block_bytes);
  }
  return bytes;
}

TEST_F(CudaOpsTest, DequantizeMatchesTheCpuDecoderForEveryGgmlType) {
  std::vector<GgmlType> types = {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16};
  for (GgmlType t : testing::GpuBlockTypes()) types.push_back(t);
  for (GgmlType type : types) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    // A window of columns [block 3, block 3 + 7) of rows that are 12 blocks wide, as a
    // tensor-parallel shard of a row-parallel weight reads it.
    const int64_t rows = 37, blocks_per_row = 12, first_block = 3, window_blocks = 7;
    const int64_t cols = window_blocks * info.block_elems, stride = blocks_per_row * info.block_bytes;
    std::mt19937 rng(static_cast<uint32_t>(type) + 11);
    const std::vector<uint8_t> bytes = info.block_elems == 1 ? RandomFloatRows(type, rows, blocks_per_row, rng)
                                                             : testing::RandomGgmlBlocks(type, rows, blocks_per_row * info.block_elems, rng);
    const uint8_t* window = bytes.data() + first_block * info.block_bytes;
    std::vector<float> want(rows * cols);
    ASSERT_TRUE(cpu_.Dequantize(type, window, stride, F32(want, rows, cols)).ok());
    auto src = gpu_->Allocate(bytes.size());
    ASSERT_TRUE(src.ok());
    ASSERT_TRUE(gpu_->CopyToDevice(bytes.data(), src->data(), bytes.size()).ok());
    for (DType out : {DType::kBF16, DType::kF32}) {
      auto dst = Upload({}, out, rows, cols);  // NaN-poisoned
      ASSERT_TRUE(gpu_->Dequantize(type, src->as<uint8_t>() + first_block * info.block_bytes, stride,
                                   dst.View(out, rows, cols)).ok());
      const std::vector<float> got = Download(dst, out, rows, cols);
      int differ = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const float expect = out == DType::kBF16 ? Bf16BitsToFloat(FloatToBf16Bits(want[i])) : want[i];
        differ += !(got[i] == expect || (std::isnan(got[i]) && std::isnan(expect)));
      }
      EXPECT_EQ(differ, 0) << info.name << (out == DType::kBF16 ? " to bf16" : " to f32");
    }
  }
}

// One CopyRegions batch moving 16-byte-word pieces device -> pinned host, host -> device and
// device -> device (the kernel path), then a batch with an odd-sized piece (the memcpy path).
TEST_F(CudaOpsTest, CopyRegionsMovesEveryPieceInEveryDirection) {
  const size_t piece = 32 << 10, pieces = 300;
  std::vector<uint8_t> data(piece * pieces);
  for (auto& b : data) b = static_cast<uint8_t>(rng_());
  auto a = gpu_->Allocate(data.size()), b = gpu_->Allocate(data.size());
  auto host = gpu_->AllocateHost(data.size());
  ASSERT_TRUE(a.ok() && b.ok() && host.ok());
  ASSERT_TRUE(gpu_->CopyToDevice(data.data(), a->data(), data.size()).ok());
  std::vector<CopyRegion> out, in, within;
  for (size_t i = 0; i < pieces; ++i) {
    const size_t j = (i * 7) % pieces;  // a permutation: pieces land out of order
    out.push_back({a->as<uint8_t>() + i * piece, host->get() + j * piece, piece});
    in.push_back({host->get() + j * piece, b->as<uint8_t>() + ((i * 11) % pieces) * piece, piece});
  }
  ASSERT_TRUE(gpu_->CopyRegions(out).ok());
  ASSERT_TRUE(gpu_->CopyRegions(in).ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  std::vector<uint8_t> got(data.size());
  ASSERT_TRUE(gpu_->CopyToHost(b->data(), got.data(), got.size()).ok());
  for (size_t i = 0; i < pieces; ++i) {
    ASSERT_EQ(std::memcmp(got.data() + ((i * 11) % pieces) * piece, data.data() + i * piece, piece), 0) << "piece " << i;
    ASSERT_EQ(std::memcmp(host->get() + ((i * 7) % pieces) * piece, data.data() + i * piece, piece), 0) << "piece " << i;
  }
  // Device to device, including a piece that is not a whole number of 16-byte words.
  within.push_back({a->as<uint8_t>() + 3, b->as<uint8_t>() + 5, 1001});
  for (size_t i = 1; i < 8; ++i) within.push_back({a->as<uint8_t>() + i * piece, b->as<uint8_t>() + i * piece, piece});
  ASSERT_TRUE(gpu_->CopyRegions(within).ok());
  ASSERT_TRUE(gpu_->CopyToHost(b->data(), got.data(), got.size()).ok());
  EXPECT_EQ(std::memcmp(got.data() + 5, data.data() + 3, 1001), 0);
  for (size_t i = 1; i < 8; ++i) EXPECT_EQ(std::memcmp(got.data() + i * piece, data.data() + i * piece, piece), 0) << i;
}

// KV block moves on their own stream: they start after the ops issued before them (here a kernel
// that writes their source), batches run in order (device -> host, then host -> device), and ops
// after WaitMoves see the moved bytes — also when those ops replay as a recorded graph, which
// waits for the slot's latest mark at each replay.
TEST_F(CudaOpsTest, MovesRunBesideTheOpsAndOrderAgainstThemBothWays) {
  const size_t piece = 64 << 10, pieces = 1024;  // 64 MiB: long enough that a missing wait shows
  const int64_t n = static_cast<int64_t>(piece * pieces / sizeof(float));
  auto a = gpu_->Allocate(piece * pieces), b = gpu_->Allocate(piece * pieces), c = gpu_->Allocate(piece * pieces);
  auto host = gpu_->AllocateHost(piece * pieces);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && host.ok());
  std::vector<float> want(n), got(n);
  auto fill = [&](uint64_t seed) {
    ASSERT_TRUE(cpu_.FillRandom(F32(want, 1, n), seed, 0.0f, 1.0f).ok());
    ASSERT_TRUE(gpu_->FillRandom(a->View(DType::kF32, 1, n), seed, 0.0f, 1.0f).ok());  // on the ops' stream
  };
  auto read_c = [&]() {
    ASSERT_TRUE(gpu_->CopyToHost(c->data(), got.data(), piece * pieces).ok());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), piece * pieces), 0);
  };
  std::vector<CopyRegion> regions;
  for (size_t i = 0; i < pieces; ++i) regions.push_back({a->as<uint8_t>() + i * piece, host->get() + i * piece, piece});
  for (size_t i = 0; i < pieces; ++i) regions.push_back({host->get() + i * piece, b->as<uint8_t>() + i * piece, piece});
  const std::vector<Backend::MoveBatch> two_batches = {{static_cast<int64_t>(pieces), 0}, {static_cast<int64_t>(pieces), 1}};
  fill(1);
  ASSERT_TRUE(gpu_->MoveRegions(regions, two_batches).ok());
  ASSERT_TRUE(gpu_->WaitMoves(1).ok());
  ASSERT_TRUE(gpu_->CopyOnDevice(b->data(), c->data(), piece * pieces).ok());
  read_c();
  // Recorded: the graph holds the wait, and each replay waits for the moves marked before it.
  auto graph = gpu_->Record([&]() -> absl::Status {
    KVS_RETURN_IF_ERROR(gpu_->WaitMoves(0));
    return gpu_->CopyOnDevice(b->data(), c->data(), piece * pieces);
  });
  ASSERT_TRUE(graph.ok() && *graph != nullptr) << graph.status();
  std::vector<CopyRegion> a_to_b;
  for (size_t i = 0; i < pieces; ++i) a_to_b.push_back({a->as<uint8_t>() + i * piece, b->as<uint8_t>() + i * piece, piece});
  for (uint64_t seed : {2, 3}) {
    fill(seed);
    const std::vector<Backend::MoveBatch> one_batch = {{static_cast<int64_t>(pieces), 0}};
    ASSERT_TRUE(gpu_->MoveRegions(a_to_b, one_batch).ok());
    ASSERT_TRUE((*graph)->Replay().ok());
    read_c();
  }
  ASSERT_TRUE(gpu_->Synchronize().ok());
  EXPECT_EQ(gpu_->MoveRegions(a_to_b, std::vector<Backend::MoveBatch>{{1, 0}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->WaitMoves(-1).code(), absl::StatusCode::kInvalidArgument);
}

// The KV offload tier's memory: kernels write and read one range whose head is device memory and
// whose tail is host memory, straight across the boundary; only the head takes device memory.
TEST_F(CudaOpsTest, AllocateWithHostTailIsOneRangeAcrossDeviceAndHost) {
  const size_t device_bytes = (3 << 20) + 4096, host_bytes = 5 << 20;  // the head rounds down to 2 MiB
  const int64_t n = static_cast<int64_t>((device_bytes + host_bytes) / sizeof(float));
  const size_t free_before = gpu_->FreeMemoryBytes();
  auto range = gpu_->AllocateWithHostTail(device_bytes, host_bytes);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_GE(free_before - gpu_->FreeMemoryBytes(), size_t{2} << 20);
  EXPECT_LT(free_before - gpu_->FreeMemoryBytes(), size_t{6} << 20) << "the host tail took device memory";
  std::vector<float> want(n);
  ASSERT_TRUE(cpu_.FillRandom(F32(want, 1, n), 7, 0.0f, 1.0f).ok());
  ASSERT_TRUE(gpu_->FillRandom(range->View(DType::kF32, 1, n), 7, 0.0f, 1.0f).ok());  // a kernel writes it all
  EXPECT_EQ(Download(*range, DType::kF32, 1, n), want);
  // A kernel reads across the boundary: CopyRegions from the tail and the head into device memory.
  auto dst = gpu_->Allocate(8 << 20);
  ASSERT_TRUE(dst.ok());
  const size_t piece = 1 << 20;
  std::vector<CopyRegion> regions;
  for (size_t i = 0; i < 8; ++i) regions.push_back({range->as<uint8_t>() + (7 - i) * piece, dst->as<uint8_t>() + i * piece, piece});
  ASSERT_TRUE(gpu_->CopyRegions(regions).ok());
  std::vector<uint8_t> got(8 << 20);
  ASSERT_TRUE(gpu_->CopyToHost(dst->data(), got.data(), got.size()).ok());
  const auto* bytes = reinterpret_cast<const uint8_t*>(want.data());
  for (size_t i = 0; i < 8; ++i) ASSERT_EQ(std::memcmp(got.data() + i * piece, bytes + (7 - i) * piece, piece), 0) << i;
  range->Reset();
  dst->Reset();
  EXPECT_LT(free_before - std::min(free_before, gpu_->FreeMemoryBytes()), size_t{1} << 20) << "not given back";
}

// The offload tier's staging window: ranges allocated with one window id map one piece of device
// memory (what a kernel writes through one range, the other reads), taken once, given back
// with the last range.
TEST_F(CudaOpsTest, HostTailRangesWithOneWindowIdShareItsDeviceMemory) {
  const size_t gran = gpu_->HostTailAlignment();
  ASSERT_GT(gran, 0u);
  const size_t device_bytes = gran, host_bytes = gran, window_offset = 3 * gran, window_bytes = 2 * gran;
  const HostTailWindow window{9001, window_offset, window_bytes};
  const size_t free_before = gpu_->FreeMemoryBytes();
  auto a = gpu_->AllocateWithHostTail(device_bytes, host_bytes, window);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = gpu_->AllocateWithHostTail(device_bytes, host_bytes, window);
  ASSERT_TRUE(b.ok()) << b.status();
  const size_t taken = free_before - gpu_->FreeMemoryBytes();
  EXPECT_GE(taken, 2 * device_bytes + window_bytes);
  EXPECT_LT(taken, 2 * device_bytes + 2 * window_bytes) << "the window was allocated twice";
  const int64_t n = static_cast<int64_t>(window_bytes / sizeof(float));
  auto view = [&](DeviceBuffer& r) {
    return TensorView{static_cast<std::byte*>(r.data()) + window_offset, DType::kF32, 1, n, n};
  };
  ASSERT_TRUE(gpu_->FillRandom(view(*a), 11, 0.0f, 1.0f).ok());
  std::vector<float> want(n);
  ASSERT_TRUE(cpu_.FillRandom(F32(want, 1, n), 11, 0.0f, 1.0f).ok());
  std::vector<float> got(n);
  ASSERT_TRUE(gpu_->CopyToHost(view(*b).data, got.data(), window_bytes).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(gpu_->AllocateWithHostTail(device_bytes, host_bytes, HostTailWindow{9001, window_offset, gran}).status().code(),
            absl::StatusCode::kInvalidArgument) << "one id, another size";
  EXPECT_FALSE(gpu_->AllocateWithHostTail(device_bytes, host_bytes, HostTailWindow{9002, gran, window_bytes}).ok())
      << "a window over the host part";
  a->Reset();
  b->Reset();
  EXPECT_LT(free_before - std::min(free_before, gpu_->FreeMemoryBytes()), size_t{1} << 20) << "not given back";
}

TEST_F(CudaOpsTest, FillRandomEqualsTheCpuFill) {
  const int64_t n = 1 << 20;
  std::vector<float> cpu(n);
  ASSERT_TRUE(cpu_.FillRandom(F32(cpu, 1, n), 42, 0.5f, 0.25f).ok());
  auto g = Upload({}, DType::kF32, 1, n);
  ASSERT_TRUE(gpu_->FillRandom(g.View(DType::kF32, 1, n), 42, 0.5f, 0.25f).ok());
  EXPECT_EQ(Download(g, DType::kF32, 1, n), cpu);

  // A window (rows 3.., columns 100..299 of a [.., 1024] tensor) equals that slice of the fill.
  const RandomWindow window{3 * 1024 + 100, 1024};
  std::vector<float> part(50 * 200);
  ASSERT_TRUE(cpu_.FillRandom(F32(part, 50, 200), 42, 0.5f, 0.25f, window).ok());
  for (int64_t r = 0; r < 50; ++r) {
    for (int64_t c = 0; c < 200; ++c) ASSERT_EQ(part[r * 200 + c], cpu[(3 + r) * 1024 + 100 + c]);
  }
  auto gp = Upload({}, DType::kF32, 50, 200);
  ASSERT_TRUE(gpu_->FillRandom(gp.View(DType::kF32, 50, 200), 42, 0.5f, 0.25f, window).ok());
  EXPECT_EQ(Download(gp, DType::kF32, 50, 200), part);
}

TEST_F(CudaOpsTest, WriteKvScattersToTheMappedSlotsExactly) {
  const int32_t kv_heads = 3, dim = 64, bs = 16, blocks = 8, t = 11;
  const int64_t width = kv_heads * dim;
  auto k = Random(t * width), v = Random(t * width);
  std::vector<int32_t> slots(t);
  for (int i = 0; i < t; ++i) slots[i] = (i * 37 + 5) % (blocks * bs);
  slots[3] = -1;  // skipped
  auto gk = Upload(k, DType::kBF16, t, width), gv = Upload(v, DType::kBF16, t, width);
  auto kc = Upload({}, DType::kBF16, blocks * bs, width), vc = Upload({}, DType::kBF16, blocks * bs, width);
  auto gslots = UploadInts(slots);
  PagedKvView cache{kc.data(), vc.data(), KvDType::kBF16, blocks, bs, kv_heads, dim};
  ASSERT_TRUE(gpu_->WriteKv(gk.View(DType::kBF16, t, width), gv.View(DType::kBF16, t, width), gslots.as<int32_t>(), cache).ok());
  const auto kout = Download(kc, DType::kBF16, blocks * bs, width);
  for (int i = 0; i < t; ++i) {
    if (slots[i] < 0) continue;
    for (int64_t e = 0; e < width; ++e) ASSERT_EQ(kout[slots[i] * width + e], k[i * width + e]);
  }
  EXPECT_TRUE(std::isnan(kout[((3 * 37 + 5) % (blocks * bs)) * width])) << "a skipped token was written";
}

// Rope fused with the KV write (one kernel for bf16 and fp16 caches) stores the bytes that Rope
// then WriteKv store, and leaves q and k rotated as Rope does: bit for bit, over GQA heads inside a
// qkv row, both head dims, a skipped token and a cache poisoned with 0xff (NaN) bytes. Other
// formats go through the two ops (Backend::RopeWriteKv), checked on an fp8 cache.
TEST_F(CudaOpsTest, RopeWriteKvStoresWhatRopeThenWriteKvStore) {
  const int32_t heads = 6, kv_heads = 2, bs = 16, blocks = 4;
  // 5 tokens take a pair a thread, 9 eight pairs (16-byte accesses).
  for (const int t : {5, 9}) {
    for (const int32_t dim : {64, 128}) {
      for (const KvDType format : {KvDType::kBF16, KvDType::kF16, KvDType::kFP8}) {
        SCOPED_TRACE(absl::StrFormat("%d tokens, head_dim %d, %s cache", t, dim, KvDTypeName(format)));
        const int64_t qk_cols = static_cast<int64_t>(heads + kv_heads) * dim, kv = static_cast<int64_t>(kv_heads) * dim;
        const int64_t width = qk_cols + kv;  // a qkv row: q, k, v
        const auto qkv = Random(t * width, 2.0f);
        std::vector<int32_t> pos(t), slots(t);
        for (int i = 0; i < t; ++i) {
          pos[i] = static_cast<int32_t>(rng_() % 100000);
          slots[i] = (i * 23 + 7) % (blocks * bs);
        }
        slots[2] = -1;  // skipped
        std::vector<float> inv(dim / 2);
        for (int i = 0; i < dim / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / dim);
        auto gpos = UploadInts(pos), gslots = UploadInts(slots);
        auto ginv = Upload(inv, DType::kF32, 1, dim / 2);
        const RopeTable rope{ginv.as<float>(), dim};
        PagedKvView shape{nullptr, nullptr, format, blocks, bs, kv_heads, dim};
        const size_t cache_bytes = static_cast<size_t>(shape.Bytes());
        const std::vector<uint8_t> poison(cache_bytes, 0xff);
        struct Run {
          DeviceBuffer qkv, k, v;
        };
        auto prepare = [&]() {
          Run r{Upload(qkv, DType::kBF16, t, width), *gpu_->Allocate(cache_bytes), *gpu_->Allocate(cache_bytes)};
          EXPECT_TRUE(gpu_->CopyToDevice(poison.data(), r.k.data(), cache_bytes).ok());
          EXPECT_TRUE(gpu_->CopyToDevice(poison.data(), r.v.data(), cache_bytes).ok());
          return r;
        };
        auto views = [&](Run& r) {
          const TensorView all{r.qkv.data(), DType::kBF16, t, width, width};
          PagedKvView cache = shape;
          cache.k = r.k.data();
          cache.v = r.v.data();
          return std::make_tuple(all.Cols(0, qk_cols), all.Cols(heads * dim, kv), all.Cols(qk_cols, kv), cache);
        };
        Run fused = prepare(), apart = prepare();
        {
          auto [qk, k, v, cache] = views(fused);
          // The kernel itself (the backend takes it for bf16 and fp16); fp8 has none: the backend's two ops.
          const cudaError_t err = cuda::LaunchRopeWriteKv(
              static_cast<cuda::bf16*>(qk.data), qk.stride, t, heads + kv_heads, dim, gpos.as<int32_t>(), rope.inv_freq,
              static_cast<const cuda::bf16*>(v.data), v.stride, gslots.as<int32_t>(), cache, gpu_->stream());
          absl::Status apart_ops;
          if (format == KvDType::kFP8) {
            apart_ops =
                gpu_->RopeWriteKv(qk, heads + kv_heads, gpos.as<int32_t>(), rope, k, v, gslots.as<int32_t>(), cache);
          }
          if (format == KvDType::kFP8) {
            ASSERT_EQ(err, cudaErrorInvalidValue);
            ASSERT_TRUE(apart_ops.ok()) << apart_ops;
          } else {
            ASSERT_EQ(err, cudaSuccess);
          }
        }
        {
          auto [qk, k, v, cache] = views(apart);
          ASSERT_TRUE(gpu_->Rope(qk, heads + kv_heads, gpos.as<int32_t>(), rope).ok());
          ASSERT_TRUE(gpu_->WriteKv(k, v, gslots.as<int32_t>(), cache).ok());
        }
        auto bytes = [&](const DeviceBuffer& b, size_t n) {
          std::vector<uint8_t> host(n);
          EXPECT_TRUE(gpu_->CopyToHost(b.data(), host.data(), n).ok());
          return host;
        };
        const size_t qkv_bytes = static_cast<size_t>(t * width * 2);
        EXPECT_EQ(bytes(fused.qkv, qkv_bytes), bytes(apart.qkv, qkv_bytes)) << "q and k rotated differently";
        const std::vector<uint8_t> kf = bytes(fused.k, cache_bytes), ka = bytes(apart.k, cache_bytes);
        const std::vector<uint8_t> vf = bytes(fused.v, cache_bytes), va = bytes(apart.v, cache_bytes);
        for (size_t i = 0; i < cache_bytes; ++i) {
          ASSERT_EQ(kf[i], ka[i]) << "k cache byte " << i;
          ASSERT_EQ(vf[i], va[i]) << "v cache byte " << i;
        }
        // Something was written, and the skipped token's slot was not.
        EXPECT_NE(kf, poison);
        const int64_t skipped = (2 * 23 + 7) % (blocks * bs);
        EXPECT_EQ(kf[shape.RowOffset(skipped, 0)], 0xff) << "a skipped token was written";
      }
    }
  }
}

}  // namespace
}  // namespace kvs
