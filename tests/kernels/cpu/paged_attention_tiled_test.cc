// The fast CPU backend's tiled attention against the reference (kernels/cpu/paged_attention.cc),
// element by element, with the seed printed on failure: ragged batches mixing prefill chunks over
// earlier keys and decodes, block sizes 1/7/16, head dims 32-256 (36 and 40 for the generic
// loops), GQA groups 1-16, sliding windows, decodes and short chunks over long contexts (split
// into key spans, a tile for all the KV heads), every KV format, the cache poisoned with 0xff
// bytes (NaN for the float formats and the scales) wherever no block table points.
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/kv_format.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/support/attention_batch.h"

namespace kvs {
namespace {

struct Case {
  int32_t q_heads, kv_heads, head_dim, block_size;
  std::vector<int32_t> context_lens, query_lens;
  int32_t window = 0;
};

void RunCase(const Case& c, KvDType dtype, uint32_t seed) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", " << KvDTypeName(dtype) << ", D=" << c.head_dim
                                  << " Hq=" << c.q_heads << " Hk=" << c.kv_heads << " bs=" << c.block_size
                                  << " window=" << c.window);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int32_t seqs = static_cast<int32_t>(c.context_lens.size());
  int32_t needed = 0, max_blocks = 0;
  for (int32_t len : c.context_lens) {
    needed += (len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size);
  }
  const int32_t num_blocks = needed + 5;
  const int64_t block_bytes = KvBlockBytes(dtype, c.block_size, c.kv_heads, c.head_dim);
  std::vector<std::byte> kbuf(num_blocks * block_bytes, std::byte{0xff}), vbuf = kbuf;
  PagedKvView cache{kbuf.data(), vbuf.data(), dtype, num_blocks, c.block_size, c.kv_heads, c.head_dim, c.window};
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(seqs * max_blocks, 0), query_start{0}, context_len;
  const int64_t width = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  int32_t next = 0, tokens = 0;
  for (int32_t s = 0; s < seqs; ++s) {
    const int32_t len = c.context_lens[s];
    for (int32_t j = 0; j < (len + c.block_size - 1) / c.block_size; ++j) table[s * max_blocks + j] = perm[next++];
    std::vector<float> k(len * width), v(len * width);
    for (auto& x : k) x = normal(rng);
    for (auto& x : v) x = normal(rng);
    std::vector<int32_t> slots(len);
    for (int32_t p = 0; p < len; ++p) slots[p] = table[s * max_blocks + p / c.block_size] * c.block_size + p % c.block_size;
    cpu::WriteKvF32(k.data(), width, v.data(), width, len, slots.data(), cache);
    tokens += c.query_lens[s];
    query_start.push_back(tokens);
    context_len.push_back(len);
  }
  const int64_t qw = static_cast<int64_t>(c.q_heads) * c.head_dim;
  std::vector<float> q(tokens * qw);
  for (auto& x : q) x = normal(rng);
  const AttentionBatch batch = testing::HostAttentionBatch(query_start, context_len, table, max_blocks, c.query_lens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<float> want(q.size(), std::nanf("")), got(q.size(), std::nanf(""));
  cpu::PagedAttentionF32(q.data(), qw, c.q_heads, cache, batch, scale, want.data(), qw);
  cpu::PagedAttentionTiledF32(q.data(), qw, c.q_heads, cache, batch, scale, got.data(), qw);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_FALSE(std::isnan(want[i])) << "the reference left element " << i << " unwritten";
    ASSERT_NEAR(got[i], want[i], 1e-5f + 1e-5f * std::fabs(want[i])) << "element " << i << " (token "
                                                                     << i / qw << ", head " << (i % qw) / c.head_dim << ")";
  }
}

TEST(PagedAttentionTiledTest, EqualsTheReferenceForEveryFormatShapeAndWindow) {
  const uint32_t seed = std::random_device{}();
  const std::vector<Case> cases = {
      {9, 3, 64, 16, {17, 54, 97}, {1, 54, 3}},        // SmolLM2 heads: decode, whole prefill, chunk
      {8, 8, 128, 1, {5, 1, 13}, {5, 1, 2}},           // MHA, page size 1
      {32, 4, 64, 7, {100, 33, 200}, {1, 1, 40}},      // GQA 8, odd page size
      {4, 1, 256, 16, {300, 40, 9}, {300, 1, 9}, 64},  // Gemma 3 shape, window 64
      {4, 2, 32, 1, {60, 9, 23}, {60, 1, 5}, 7},       // tiny window, page size 1, chunk offsets
      {8, 2, 96, 7, {130, 40}, {30, 40}, 33},          // head_dim 96, window across pages
      // Past kSplitKeys keys a sequence whose queries fit one tile is split into 512-key spans:
      // decodes and a short chunk beside a long prefill (not split), a last span of one key.
      {4, 1, 256, 16, {1537, 600, 2000}, {1, 1, 600}},  // Gemma 3 global layer: 4 spans, 2
      {9, 3, 64, 7, {1200, 3000, 513}, {1, 10, 1}},     // SmolLM2 heads, a 10-query chunk
      {4, 1, 256, 16, {2000, 1100}, {1, 3}, 512},       // window 512: one span, not split
      {8, 4, 64, 1, {1030}, {16}},                      // a whole tile of queries, page size 1
      // A split sequence's tile covers all its KV heads (up to 8, within kMaxRows rows): Llama-3's
      // heads, 2 heads under a window, and the per-head tiles past either bound (16 KV heads;
      // 16 queries x group 16 x 8 heads).
      {32, 8, 128, 16, {700, 1500, 40}, {1, 2, 40}},
      {8, 2, 64, 16, {1500, 900}, {1, 3}, 700},
      {16, 16, 64, 16, {600}, {1}},
      {128, 8, 32, 7, {600}, {16}},
      // Head dims the AVX2 forms leave to the generic loops: 40 (transposed scores, row-at-a-time
      // accumulation: not a multiple of 16), 36 (neither: not a multiple of 8).
      {6, 2, 40, 16, {70, 20}, {70, 1}},
      {4, 2, 36, 7, {50, 9}, {50, 2}},
  };
  for (KvDType t : {KvDType::kF32, KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4}) {
    for (size_t i = 0; i < cases.size(); ++i) {
      if (KvDTypeHeadDimProblem(t, cases[i].head_dim) != nullptr) continue;  // int4 needs multiples of 32
      RunCase(cases[i], t, seed + static_cast<uint32_t>(i));
      if (HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace kvs
