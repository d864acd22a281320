// The CPU backend's ops against direct, unoptimised formulas — paged attention walks a random
// block table with NaN poured into every slot it must not read, over odd sizes and page size 1.
#include "kernels/cpu/cpu_backend.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "tests/support/attention_batch.h"

namespace kvs {
namespace {

struct AttnCase {
  int32_t q_heads, kv_heads, head_dim, block_size;
  std::vector<int32_t> context_lens, query_lens;
};

// Reference: contiguous per-sequence K/V, plain two-pass softmax.
void NaiveAttention(const std::vector<float>& q, int32_t t, const std::vector<std::vector<float>>& keys,
                    const std::vector<std::vector<float>>& values, const AttnCase& c, int32_t seq, int32_t pos,
                    float scale, float* out) {
  const int32_t group = c.q_heads / c.kv_heads;
  const int64_t width = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  for (int32_t h = 0; h < c.q_heads; ++h) {
    const float* qh = q.data() + static_cast<int64_t>(t) * c.q_heads * c.head_dim + h * c.head_dim;
    const int32_t kvh = h / group;
    std::vector<double> s(pos + 1);
    double mx = -1e300;
    for (int32_t p = 0; p <= pos; ++p) {
      double dot = 0;
      for (int32_t d = 0; d < c.head_dim; ++d) dot += qh[d] * keys[seq][p * width + kvh * c.head_dim + d];
      s[p] = dot * scale;
      mx = std::max(mx, s[p]);
    }
    double sum = 0;
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (int32_t d = 0; d < c.head_dim; ++d) {
      double acc = 0;
      for (int32_t p = 0; p <= pos; ++p) acc += s[p] * values[seq][p * width + kvh * c.head_dim + d];
      out[h * c.head_dim + d] = static_cast<float>(acc / sum);
    }
  }
}

void RunAttentionCase(const AttnCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  CpuBackend be(size_t{1} << 30);
  const int32_t seqs = static_cast<int32_t>(c.context_lens.size());
  const int64_t width = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  int32_t total_blocks = 0;
  for (int32_t len : c.context_lens) total_blocks += (len + c.block_size - 1) / c.block_size;
  const int32_t num_blocks = total_blocks + 5;
  // The cache starts as NaN everywhere: any read of a slot not written below poisons the output.
  auto kbuf = be.Allocate(num_blocks * c.block_size * width * 4);
  auto vbuf = be.Allocate(num_blocks * c.block_size * width * 4);
  ASSERT_TRUE(kbuf.ok() && vbuf.ok());
  std::fill_n(kbuf->as<float>(), num_blocks * c.block_size * width, std::numeric_limits<float>::quiet_NaN());
  std::fill_n(vbuf->as<float>(), num_blocks * c.block_size * width, std::numeric_limits<float>::quiet_NaN());
  PagedKvView cache{kbuf->data(), vbuf->data(), KvDType::kF32, num_blocks, c.block_size, c.kv_heads, c.head_dim};

  std::vector<int32_t> perm(num_blocks);
  for (int32_t i = 0; i < num_blocks; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  int32_t max_blocks = 0;
  for (int32_t len : c.context_lens) max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size);
  std::vector<int32_t> table(seqs * max_blocks, 0), query_start{0}, context_len;
  std::vector<std::vector<float>> keys(seqs), values(seqs);
  int32_t next = 0, tokens = 0;
  for (int32_t s = 0; s < seqs; ++s) {
    const int32_t len = c.context_lens[s];
    const int32_t nb = (len + c.block_size - 1) / c.block_size;
    for (int32_t j = 0; j < nb; ++j) table[s * max_blocks + j] = perm[next++];
    keys[s].resize(len * width);
    values[s].resize(len * width);
    for (auto& x : keys[s]) x = normal(rng);
    for (auto& x : values[s]) x = normal(rng);
    // Write the context through WriteKv, as the engine does.
    std::vector<int32_t> slots(len);
    for (int32_t p = 0; p < len; ++p) slots[p] = table[s * max_blocks + p / c.block_size] * c.block_size + p % c.block_size;
    ASSERT_TRUE(be.WriteKv(TensorView::Contiguous(keys[s].data(), DType::kF32, len, width),
                           TensorView::Contiguous(values[s].data(), DType::kF32, len, width), slots.data(), cache)
                    .ok());
    tokens += c.query_lens[s];
    query_start.push_back(tokens);
    context_len.push_back(len);
  }
  std::vector<float> q(static_cast<size_t>(tokens) * c.q_heads * c.head_dim);
  for (auto& x : q) x = normal(rng);
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
  const AttentionBatch batch = testing::HostAttentionBatch(query_start, context_len, table, max_blocks, c.query_lens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int64_t qw = static_cast<int64_t>(c.q_heads) * c.head_dim;
  ASSERT_TRUE(be.PagedAttention(TensorView::Contiguous(q.data(), DType::kF32, tokens, qw), cache, batch, scale,
                                TensorView::Contiguous(out.data(), DType::kF32, tokens, qw))
                  .ok());
  std::vector<float> want(qw);
  for (int32_t s = 0; s < seqs; ++s) {
    for (int32_t i = 0; i < c.query_lens[s]; ++i) {
      const int32_t t = query_start[s] + i;
      const int32_t pos = c.context_lens[s] - c.query_lens[s] + i;
      NaiveAttention(q, t, keys, values, c, s, pos, scale, want.data());
      for (int64_t e = 0; e < qw; ++e) {
        ASSERT_FALSE(std::isnan(out[t * qw + e])) << "read an unwritten slot: seq " << s << " token " << i;
        ASSERT_NEAR(out[t * qw + e], want[e], 2e-5) << "seq " << s << " token " << i << " elem " << e;
      }
    }
  }
}

TEST(PagedAttentionCpuTest, MatchesNaiveAttentionOnRaggedBatchesWithRandomBlockTables) {
  RunAttentionCase({9, 3, 64, 16, {17, 54, 97}, {1, 54, 3}}, 1);       // SmolLM2 heads, prefill+decode mix
  RunAttentionCase({8, 8, 128, 1, {5, 1, 13}, {5, 1, 2}}, 2);          // MHA, page size 1
  RunAttentionCase({32, 4, 64, 7, {100, 33}, {1, 1}}, 3);              // GQA 8, odd page size
  RunAttentionCase({4, 1, 32, 3, {1, 2, 3, 4, 5, 6}, {1, 1, 3, 1, 5, 2}}, 4);  // MQA, tiny contexts
}

// Rope keeps the last two calls' angles (kernels/cpu/rope.cc): every call must still rotate at its
// own positions and frequencies, bit for bit as the formula computed per element — calls that
// repeat positions (the layers of a step), change one position, change the frequencies only
// (Gemma's two kinds of layers), alternate among three sets (evicting), and vary the tokens.
TEST(CpuBackendTest, RopeAnglesKeptBetweenCallsRotateAsTheFormula) {
  CpuBackend be(size_t{1} << 28);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  const int32_t heads = 3, head_dim = 8, half = head_dim / 2;
  const std::vector<float> freq_a = {1.0f, 0.1f, 0.01f, 0.001f}, freq_b = {0.5f, 0.05f, 0.005f, 0.0005f},
                           freq_c = {2.0f, 0.2f, 0.02f, 0.002f};
  struct Call {
    std::vector<int32_t> positions;
    const std::vector<float>* freq;
  };
  const std::vector<Call> calls = {{{5, 6, 7}, &freq_a},     {{5, 6, 7}, &freq_a}, {{5, 6, 8}, &freq_a},
                                   {{5, 6, 8}, &freq_b},     {{5, 6, 8}, &freq_a}, {{5, 6, 8}, &freq_c},
                                   {{5, 6, 8}, &freq_b},     {{5, 6}, &freq_b},    {{9}, &freq_b},
                                   {{131071, 0, 3}, &freq_c}};
  for (size_t i = 0; i < calls.size(); ++i) {
    const Call& c = calls[i];
    const int64_t tokens = static_cast<int64_t>(c.positions.size()), stride = heads * head_dim + 3;
    std::vector<float> x(tokens * stride);
    for (float& v : x) v = u(rng);
    std::vector<float> want = x;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int32_t h = 0; h < heads; ++h) {
        float* xh = want.data() + t * stride + h * head_dim;
        for (int32_t d = 0; d < half; ++d) {
          const float angle = static_cast<float>(c.positions[t]) * (*c.freq)[d];
          const float co = static_cast<float>(std::cos(static_cast<double>(angle)));
          const float si = static_cast<float>(std::sin(static_cast<double>(angle)));
          const float a = xh[d], b = xh[d + half];
          xh[d] = a * co - b * si;
          xh[d + half] = b * co + a * si;
        }
      }
    }
    TensorView view{x.data(), DType::kF32, tokens, heads * head_dim, stride};
    ASSERT_TRUE(be.Rope(view, heads, c.positions.data(), RopeTable{c.freq->data(), head_dim}).ok());
    for (size_t k = 0; k < x.size(); ++k) {
      ASSERT_EQ(x[k], want[k]) << "call " << i << ", element " << k;
    }
  }
}

TEST(CpuBackendTest, RmsNormRopeSwiGluAndLinearMatchFormulas) {
  CpuBackend be(size_t{1} << 28);
  std::vector<float> x = {1, 2, 3, 4, -1, 0, 0, 1}, w = {1, 0.5f, 2, 1}, out(8);
  ASSERT_TRUE(be.RmsNorm(TensorView::Contiguous(x.data(), DType::kF32, 2, 4), TensorView::Contiguous(w.data(), DType::kF32, 1, 4),
                         0.0f, TensorView::Contiguous(out.data(), DType::kF32, 2, 4)).ok());
  const float r0 = std::sqrt((1 + 4 + 9 + 16) / 4.0f);
  EXPECT_NEAR(out[1], 2 / r0 * 0.5f, 1e-6);
  EXPECT_NEAR(out[4], -1 / std::sqrt(0.5f), 1e-6);

  // Rope: one head of dim 4 at position 3, pairs (0,2) and (1,3).
  std::vector<float> v = {1, 2, 3, 4}, inv = {0.5f, 0.25f};
  int32_t pos = 3;
  ASSERT_TRUE(be.Rope(TensorView::Contiguous(v.data(), DType::kF32, 1, 4), 1, &pos, RopeTable{inv.data(), 4}).ok());
  EXPECT_NEAR(v[0], 1 * std::cos(1.5f) - 3 * std::sin(1.5f), 1e-6);
  EXPECT_NEAR(v[2], 3 * std::cos(1.5f) + 1 * std::sin(1.5f), 1e-6);
  EXPECT_NEAR(v[1], 2 * std::cos(0.75f) - 4 * std::sin(0.75f), 1e-6);

  std::vector<float> gu = {1, -2, 3, 4}, act(2);
  ASSERT_TRUE(be.SwiGlu(TensorView::Contiguous(gu.data(), DType::kF32, 1, 4), TensorView::Contiguous(act.data(), DType::kF32, 1, 2)).ok());
  EXPECT_NEAR(act[0], 1 / (1 + std::exp(-1.0f)) * 3, 1e-6);
  EXPECT_NEAR(act[1], -2 / (1 + std::exp(2.0f)) * 4, 1e-6);

  // Linear with 17 outputs and 19 inputs over 11 tokens against a triple loop.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> xs(11 * 19), ws(17 * 19), b(17), y(11 * 17);
  for (auto* vec : {&xs, &ws, &b}) for (auto& e : *vec) e = u(rng);
  ASSERT_TRUE(be.Linear(TensorView::Contiguous(xs.data(), DType::kF32, 11, 19), TensorView::Contiguous(ws.data(), DType::kF32, 17, 19),
                        TensorView::Contiguous(b.data(), DType::kF32, 1, 17), TensorView::Contiguous(y.data(), DType::kF32, 11, 17)).ok());
  for (int t = 0; t < 11; ++t) {
    for (int n = 0; n < 17; ++n) {
      double acc = b[n];
      for (int k = 0; k < 19; ++k) acc += xs[t * 19 + k] * ws[n * 19 + k];
      EXPECT_NEAR(y[t * 17 + n], acc, 1e-5);
    }
  }
}

TEST(CpuBackendTest, ShapeAndTypeMismatchesAreErrorsNotCrashes) {
  CpuBackend be(size_t{1} << 20);
  std::vector<float> a(12), b(12);
  auto s = be.Linear(TensorView::Contiguous(a.data(), DType::kF32, 3, 4), TensorView::Contiguous(b.data(), DType::kF32, 4, 3),
                     TensorView{}, TensorView::Contiguous(a.data(), DType::kF32, 3, 4));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("shape mismatch"), std::string::npos);
  s = be.RmsNorm(TensorView::Contiguous(a.data(), DType::kBF16, 3, 4), TensorView::Contiguous(b.data(), DType::kF32, 1, 4), 1e-5f,
                 TensorView::Contiguous(a.data(), DType::kF32, 3, 4));
  EXPECT_NE(s.message().find("must be f32"), std::string::npos);
  EXPECT_EQ(be.Allocate(size_t{1} << 21).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(CpuBackendTest, AllocationsAreAccountedAndReturned) {
  CpuBackend be(1000);
  {
    auto a = be.Allocate(600);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(be.FreeMemoryBytes(), 400u);
    EXPECT_FALSE(be.Allocate(500).ok());
    DeviceBuffer moved = *std::move(a);
    EXPECT_EQ(be.FreeMemoryBytes(), 400u);
  }
  EXPECT_EQ(be.FreeMemoryBytes(), 1000u);
}

// The three ops a tensor-parallel rank uses on its slice of a tensor.
TEST(CpuBackendTest, ShardedFillEmbeddingAndArgmaxAgreeWithTheWholeTensor) {
  CpuBackend be(size_t{1} << 24);
  const int64_t rows = 40, cols = 24;
  std::vector<float> whole(rows * cols), part(10 * 8);
  ASSERT_TRUE(be.FillRandom(TensorView::Contiguous(whole.data(), DType::kF32, rows, cols), 7, 0.0f, 1.0f).ok());
  // Rows 5..14, columns 16..23.
  ASSERT_TRUE(be.FillRandom(TensorView::Contiguous(part.data(), DType::kF32, 10, 8), 7, 0.0f, 1.0f,
                            RandomWindow{5 * cols + 16, cols}).ok());
  for (int64_t r = 0; r < 10; ++r) {
    for (int64_t c = 0; c < 8; ++c) ASSERT_EQ(part[r * 8 + c], whole[(5 + r) * cols + 16 + c]) << r << "," << c;
  }

  // Embedding of a vocab shard: rows 10..19 of the table; other ids are zero rows.
  const std::vector<int32_t> ids = {3, 10, 19, 20, 15};
  std::vector<float> out(ids.size() * cols, -1.0f);
  ASSERT_TRUE(be.Embedding(ids.data(), TensorView::Contiguous(whole.data() + 10 * cols, DType::kF32, 10, cols), 10,
                           TensorView::Contiguous(out.data(), DType::kF32, 5, cols)).ok());
  for (size_t t = 0; t < ids.size(); ++t) {
    const bool held = ids[t] >= 10 && ids[t] < 20;
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(out[t * cols + c], held ? whole[ids[t] * cols + c] : 0.0f);
  }

  // Argmax of a shard reports global ids and the winning value; ties go to the lower id.
  std::vector<float> logits = {1, 5, 5, 2, 9, 0, 9, 9};
  int32_t id[2];
  float value[2];
  ASSERT_TRUE(be.ArgmaxRows(TensorView::Contiguous(logits.data(), DType::kF32, 2, 4), 100, id, value).ok());
  EXPECT_EQ(id[0], 101);
  EXPECT_EQ(value[0], 5.0f);
  EXPECT_EQ(id[1], 100);
  EXPECT_EQ(value[1], 9.0f);

  // SampleRows draws per request from the named row (greedy here, then a certain draw: top_k 1),
  // and answers -1 for a row the logits do not have.
  const SampleRequest reqs[] = {{1, 0.0f, 0, 1.0f, 0.3f}, {0, 1.0f, 1, 1.0f, 0.9f}, {2, 1.0f, 0, 1.0f, 0.5f}};
  int32_t drawn[3];
  ASSERT_TRUE(be.SampleRows(TensorView::Contiguous(logits.data(), DType::kF32, 2, 4), reqs, 3, drawn).ok());
  EXPECT_EQ(drawn[0], 0);
  EXPECT_EQ(drawn[1], 1);
  EXPECT_EQ(drawn[2], -1);
}

}  // namespace
}  // namespace kvs
