// The block GEMV's activations rounded by the kernel that writes them (RmsNorm, AddRmsNorm, SwiGlu,
// GeluGlu, while GGML blocks are kept) are the bytes the rounding kernel of its own writes: a
// Linear right after the producer must give bit for bit what the same Linear gives over the same
// activations rounded afresh, and must launch no rounding of its own (the counter proves the fused
// path ran, so the comparison is not between two runs of the same path). Also: a matrix's later
// parts reuse the rounding, anything else written in between makes the Linear round again, and
// beyond kBlockGemvMaxTokens the producers leave rounding to the Linear. Decode attention over
// split keys rounds its output too (the second test). Shapes: a short last group
// of units (160 columns), a long row (4,096), 1 to 9 tokens, strided rows whose unused columns are
// NaN, and a NaN in one token's input. The seed is printed on failure.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
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

// Equal bit for bit, NaN where NaN.
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

class ActivationRoundingTest : public testing::GpuFixture<> {
 protected:
  DeviceBuffer Floats(const std::vector<float>& host, DType dtype, int64_t rows, int64_t stride) {
    auto buf = gpu_->Allocate(rows * stride * DTypeSize(dtype));
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->UploadFloat(host, buf->View(dtype, rows, stride)).ok());
    return std::move(*buf);
  }
  std::vector<float> Download(const TensorView& v) {
    std::vector<float> out(v.rows * v.stride);
    EXPECT_TRUE(gpu_->DownloadFloat(TensorView{v.data, v.dtype, v.rows, v.stride, v.stride}, out).ok());
    return out;
  }
  static float Bf16(float v) { return Bf16BitsToFloat(FloatToBf16Bits(v)); }
  // Weights as the loader keeps them (LinearTakesBlocks, then the backend's layout).
  DeviceBuffer Blocks(GgmlType type, int64_t rows, int64_t k, std::mt19937& rng) {
    EXPECT_TRUE(gpu_->LinearTakesBlocks(type));
    const std::vector<uint8_t> host = testing::RandomGgmlBlocks(type, rows, k, rng);
    auto buf = gpu_->Allocate(host.size());
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->CopyToDevice(host.data(), buf->data(), host.size()).ok());
    EXPECT_TRUE(gpu_->ArrangeBlocks(type, buf->data(), rows, k).ok());
    return std::move(*buf);
  }
  // A Linear's f32 output [rows, n] (3 poisoned columns a row), NaN-filled. Made before the
  // producer runs: its upload is a write, which makes the backend forget what it holds.
  struct Out {
    DeviceBuffer y;
    int64_t rows, n, stride;
  };
  Out Poisoned(int64_t rows, int64_t n) {
    const int64_t stride = n + 3;
    return Out{Floats(std::vector<float>(rows * stride, kNaN), DType::kF32, rows, stride), rows, n, stride};
  }
  // y = x w^T into `out`; how many rounding kernels it launched.
  int64_t LinearInto(const TensorView& x, const TensorView& w, Out& out) {
    const int64_t before = cuda::ActivationRoundingsLaunched();
    EXPECT_TRUE(
        gpu_->Linear(x, w, TensorView{}, TensorView{out.y.data(), DType::kF32, x.rows, w.rows, out.stride}).ok());
    return cuda::ActivationRoundingsLaunched() - before;
  }
  std::vector<float> Read(const Out& out) {
    return Download(TensorView{out.y.data(), DType::kF32, out.rows, out.stride, out.stride});
  }
  // Makes the backend forget what it holds without touching x: a write elsewhere.
  void WriteElsewhere() {
    const float one = 1.0f;
    ASSERT_TRUE(gpu_->CopyToDevice(&one, scratch_.data(), sizeof(one)).ok());
  }
  // The Linears of a matrix's parts right after a producer, into outputs poisoned before it ran
  // (`ready`, one a part): the first must launch `first_launched` rounding kernels and the later
  // parts none (they reuse its rounding). Then each part again over the activations rounded afresh
  // (a write in between): equal bit for bit. The outputs after the producer, a vector a part.
  std::vector<std::vector<float>> ExpectSameAsRoundedAfresh(const TensorView& x, const std::vector<TensorView>& parts,
                                                            std::vector<Out>& ready, int64_t first_launched,
                                                            const std::string& what) {
    for (size_t i = 0; i < parts.size(); ++i) {
      EXPECT_EQ(LinearInto(x, parts[i], ready[i]), i == 0 ? first_launched : 0)
          << what << ", part " << i << ": rounding kernels of the Linear after the producer";
    }
    std::vector<std::vector<float>> after_producer;
    for (size_t i = 0; i < parts.size(); ++i) {
      after_producer.push_back(Read(ready[i]));
      WriteElsewhere();
      Out again = Poisoned(x.rows, parts[i].rows);
      EXPECT_EQ(LinearInto(x, parts[i], again), 1) << what << ", part " << i << ": the Linear rounds afresh";
      ExpectSame(after_producer.back(), Read(again), what + ", part " + std::to_string(i));
    }
    return after_producer;
  }
  void SetUp() override {
    testing::GpuFixture<>::SetUp();
    if (IsSkipped()) return;
    auto s = gpu_->Allocate(64);
    ASSERT_TRUE(s.ok());
    scratch_ = std::move(*s);
  }
  DeviceBuffer scratch_;
};

enum class Producer { kRmsNorm, kAddRmsNorm, kSwiGlu, kGeluGlu };
const char* Name(Producer p) {
  switch (p) {
    case Producer::kRmsNorm: return "RmsNorm";
    case Producer::kAddRmsNorm: return "AddRmsNorm";
    case Producer::kSwiGlu: return "SwiGlu";
    case Producer::kGeluGlu: return "GeluGlu";
  }
  return "?";
}

TEST_F(ActivationRoundingTest, AProducersRoundingEqualsTheRoundingKernels) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // As a load keeping GGML blocks does: the blocks' buffers exist before the first step.
  ASSERT_TRUE(gpu_->LinearTakesBlocks(GgmlType::kQ4_0));
  ASSERT_TRUE(gpu_->ReserveWorkspace(16, 4, 8, 64).ok());
  for (const int64_t k : {160, 4096}) {
    // Two parts of one matrix of different types (a Q4_K_M file's QKV: Q4_K, then Q6_K), where k
    // takes the K-quants' 256-wide blocks; else Q4_0 and Q5_1.
    const GgmlType first = k % 256 == 0 ? GgmlType::kQ4_K : GgmlType::kQ4_0;
    const GgmlType second = k % 256 == 0 ? GgmlType::kQ6_K : GgmlType::kQ5_1;
    const int64_t n1 = 37, n2 = 21;
    DeviceBuffer w1 = Blocks(first, n1, k, rng), w2 = Blocks(second, n2, k, rng);
    const TensorView wv1{w1.data(), DType::kBlocks, n1, k, k, first}, wv2{w2.data(), DType::kBlocks, n2, k, k, second};
    for (const Producer p : {Producer::kRmsNorm, Producer::kAddRmsNorm, Producer::kSwiGlu, Producer::kGeluGlu}) {
      for (const int64_t tokens : {1, 3, 8, 9}) {
        for (const bool nan_input : {false, true}) {
          SCOPED_TRACE(std::string(Name(p)) + ", k " + std::to_string(k) + ", " + std::to_string(tokens) + " tokens" +
                       (nan_input ? ", a NaN in token 0's input" : ""));
          // The producer's inputs, rows strided with NaN between them.
          const int64_t in_cols = p == Producer::kSwiGlu || p == Producer::kGeluGlu ? 2 * k : k;
          const int64_t in_stride = in_cols + 8, out_stride = k + 32;
          std::vector<float> in(tokens * in_stride, kNaN), update(tokens * in_stride, kNaN), norm_w(k);
          for (int64_t t = 0; t < tokens; ++t)
            for (int64_t e = 0; e < in_cols; ++e) {
              in[t * in_stride + e] = Bf16(normal(rng) * (e % 13 == 0 ? 6.0f : 1.0f));
              update[t * in_stride + e] = Bf16(normal(rng));
            }
          for (float& g : norm_w) g = Bf16(1.0f + 0.25f * normal(rng));
          if (nan_input) in[0 * in_stride + 37] = kNaN;
          const DType in_dtype = p == Producer::kRmsNorm || p == Producer::kAddRmsNorm ? DType::kF32 : DType::kBF16;
          DeviceBuffer gin = Floats(in, in_dtype, tokens, in_stride);
          DeviceBuffer gupdate = Floats(update, DType::kBF16, tokens, in_stride);
          DeviceBuffer gw = Floats(norm_w, DType::kBF16, 1, k);
          DeviceBuffer gout = Floats(std::vector<float>(tokens * out_stride, kNaN), DType::kBF16, tokens, out_stride);
          const TensorView in_v{gin.data(), in_dtype, tokens, in_cols, in_stride};
          const TensorView out_v{gout.data(), DType::kBF16, tokens, k, out_stride};
          const TensorView norm_v = gw.View(DType::kBF16, 1, k);
          std::vector<Out> ready;
          ready.push_back(Poisoned(tokens, n1));
          ready.push_back(Poisoned(tokens, n2));
          switch (p) {
            case Producer::kRmsNorm: ASSERT_TRUE(gpu_->RmsNorm(in_v, norm_v, 1e-5f, out_v).ok()); break;
            case Producer::kAddRmsNorm:
              ASSERT_TRUE(gpu_->AddRmsNorm(in_v, TensorView{gupdate.data(), DType::kBF16, tokens, k, in_stride}, norm_v,
                                           1e-5f, out_v)
                              .ok());
              break;
            case Producer::kSwiGlu: ASSERT_TRUE(gpu_->SwiGlu(in_v, out_v).ok()); break;
            case Producer::kGeluGlu: ASSERT_TRUE(gpu_->GeluGlu(in_v, out_v).ok()); break;
          }
          // Right after the producer no rounding kernel up to kBlockGemvMaxTokens; the second part
          // reuses the first's rounding.
          const bool producer_rounds = tokens <= cuda::kBlockGemvMaxTokens;
          const std::vector<float> fused1 =
              ExpectSameAsRoundedAfresh(out_v, {wv1, wv2}, ready, producer_rounds ? 0 : 1, "after the producer")[0];
          // The NaN reaches its token's outputs only (RMSNorm: the whole row; SwiGLU: one unit).
          for (int64_t t = 0; t < tokens; ++t) {
            const bool any_nan = std::isnan(fused1[t * (n1 + 3)]) || std::isnan(fused1[t * (n1 + 3) + 1]);
            EXPECT_EQ(any_nan, nan_input && t == 0) << "token " << t;
          }
          // The producer wrote its row and nothing past it.
          const std::vector<float> out = Download(out_v);
          for (int64_t t = 0; t < tokens; ++t)
            for (int64_t e = k; e < out_stride; ++e) ASSERT_TRUE(std::isnan(out[t * out_stride + e])) << "column " << e;
        }
      }
    }
  }
}

// Decode attention whose keys are split rounds its output in the pass that merges the splits, as the
// rounding kernel would round it: the O projection after it launches no rounding of its own.
TEST_F(ActivationRoundingTest, SplitAttentionRoundsItsOutputAsTheRoundingKernel) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int32_t q_heads = 8, kv_heads = 2, dim = 128, bs = 16;
  const int64_t width = static_cast<int64_t>(q_heads) * dim, kv_width = static_cast<int64_t>(kv_heads) * dim;
  ASSERT_TRUE(gpu_->LinearTakesBlocks(GgmlType::kQ4_0));
  ASSERT_TRUE(gpu_->ReserveWorkspace(16, 4, q_heads, dim).ok());
  const int64_t n = 37;
  DeviceBuffer w = Blocks(GgmlType::kQ4_0, n, width, rng);
  const TensorView wv{w.data(), DType::kBlocks, n, width, width, GgmlType::kQ4_0};
  // One long sequence, then three of ragged lengths: keys enough that the decode splits them.
  for (const std::vector<int32_t>& context : {std::vector<int32_t>{3001}, std::vector<int32_t>{2500, 1799, 700}}) {
    const int32_t seqs = static_cast<int32_t>(context.size());
    SCOPED_TRACE(std::to_string(seqs) + " sequences");
    int32_t max_blocks = 0, blocks = 0;
    for (int32_t c : context) max_blocks = std::max(max_blocks, (c + bs - 1) / bs);
    for (int32_t c : context) blocks += (c + bs - 1) / bs;
    std::vector<int32_t> pages(blocks);  // each page used once, in shuffled order
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    std::vector<int32_t> table(seqs * max_blocks, 0), query_start(seqs + 1);
    for (int32_t s = 0, next = 0; s < seqs; ++s) {
      query_start[s + 1] = s + 1;
      for (int32_t b = 0; b < (context[s] + bs - 1) / bs; ++b) table[s * max_blocks + b] = pages[next++];
    }
    std::vector<float> kv(static_cast<size_t>(blocks) * bs * kv_width);
    for (float& x : kv) x = Bf16(normal(rng));
    DeviceBuffer k = Floats(kv, DType::kBF16, static_cast<int64_t>(blocks) * bs, kv_width);
    for (float& x : kv) x = Bf16(normal(rng));
    DeviceBuffer v = Floats(kv, DType::kBF16, static_cast<int64_t>(blocks) * bs, kv_width);
    const PagedKvView cache{k.data(), v.data(), KvDType::kBF16, blocks, bs, kv_heads, dim};
    auto ints = [&](const std::vector<int32_t>& host) {
      auto buf = gpu_->Allocate(host.size() * 4);
      EXPECT_TRUE(buf.ok());
      EXPECT_TRUE(gpu_->CopyToDevice(host.data(), buf->data(), host.size() * 4).ok());
      return std::move(*buf);
    };
    DeviceBuffer gstart = ints(query_start), gcontext = ints(context), gtable = ints(table);
    AttentionBatch batch;
    batch.num_seqs = seqs;
    batch.num_tokens = seqs;
    batch.max_blocks_per_seq = max_blocks;
    batch.max_context_len = *std::max_element(context.begin(), context.end());
    batch.max_query_len = 1;
    batch.query_start = gstart.as<int32_t>();
    batch.context_len = gcontext.as<int32_t>();
    batch.block_table = gtable.as<int32_t>();
    std::vector<float> q(seqs * width);
    for (float& x : q) x = Bf16(normal(rng));
    DeviceBuffer gq = Floats(q, DType::kBF16, seqs, width);
    const int64_t out_stride = width + 32;
    DeviceBuffer gout = Floats(std::vector<float>(seqs * out_stride, kNaN), DType::kBF16, seqs, out_stride);
    const TensorView out_v{gout.data(), DType::kBF16, seqs, width, out_stride};
    std::vector<Out> ready;
    ready.push_back(Poisoned(seqs, n));
    ASSERT_TRUE(gpu_->PagedAttention(gq.View(DType::kBF16, seqs, width), cache, batch, 0.088f, out_v).ok());
    const std::vector<float> fused =
        ExpectSameAsRoundedAfresh(out_v, {wv}, ready, 0, "O projection after split attention")[0];
    for (size_t i = 0; i < fused.size(); ++i) {
      if (i % (n + 3) < static_cast<size_t>(n)) ASSERT_FALSE(std::isnan(fused[i])) << "output " << i;
    }
  }
}

}  // namespace
}  // namespace kvs
