// GGUF parsing: a valid small file round-trips; truncated, corrupted and unsupported files get
// errors naming the file, the entry and what is wrong.
#include "runtime/model/gguf_file.h"

#include <cmath>
#include <functional>
#include <random>

#include "gtest/gtest.h"
#include "runtime/model/weight_check.h"
#include "runtime/model/weight_source.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GgufWriter;
using testing::WriteTemp;

GgufWriter TinyLlama() {
  GgufWriter w;
  w.Str("general.architecture", "llama");
  w.U32("llama.block_count", 1);
  w.U32("llama.embedding_length", 8);
  w.U32("llama.feed_forward_length", 16);
  w.U32("llama.attention.head_count", 2);
  w.U32("llama.attention.head_count_kv", 1);
  w.U32("llama.context_length", 64);
  w.F32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.StrArray("tokenizer.ggml.tokens", {"a", "b"});
  w.I32Array("some.ints", {1, -2, 3});
  w.TensorF32("token_embd.weight", {8, 4}, std::vector<float>(32, 0.5f));
  return w;
}

TEST(GgufFileTest, ParsesMetadataAndTensorTable) {
  const std::string path = WriteTemp("ok.gguf", TinyLlama().Bytes());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*f)->GetUint("llama.block_count"), 1u);
  EXPECT_FLOAT_EQ(static_cast<float>(*(*f)->GetFloat("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ((**(*f)->GetStringArray("tokenizer.ggml.tokens")).size(), 2u);
  EXPECT_EQ(**(*f)->GetIntArray("some.ints"), (std::vector<int64_t>{1, -2, 3}));
  const GgufTensorInfo* t = (*f)->FindTensor("token_embd.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dims, (std::vector<int64_t>{8, 4}));
  EXPECT_EQ(t->num_bytes, 128u);
  EXPECT_EQ((*f)->GetUint("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*f)->GetString("llama.block_count").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufFileTest, EveryTruncationIsAnErrorNeverACrash) {
  const auto bytes = TinyLlama().Bytes();
  // Cut the file at every length short of the end: the parser must refuse each cleanly.
  for (size_t len = 0; len < bytes.size(); ++len) {
    const std::string path = WriteTemp("cut.gguf", std::vector<uint8_t>(bytes.begin(), bytes.begin() + len));
    auto f = GgufFile::Open(path);
    ASSERT_FALSE(f.ok()) << "accepted a file cut at " << len << " of " << bytes.size();
    EXPECT_NE(f.status().message().find("cut.gguf"), std::string::npos) << f.status();
  }
}

TEST(GgufFileTest, RandomByteCorruptionNeverCrashes) {
  const auto bytes = TinyLlama().Bytes();
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    auto b = bytes;
    for (int k = 0; k < 3; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto f = GgufFile::Open(WriteTemp("corrupt.gguf", b));
    if (!f.ok()) ++rejected;
  }
  EXPECT_GT(rejected, 0);
}

TEST(GgufFileTest, NamesTheProblem) {
  {
    auto b = TinyLlama().Bytes();
    b[0] = 'X';
    auto f = GgufFile::Open(WriteTemp("magic.gguf", b));
    EXPECT_NE(f.status().message().find("not a GGUF file"), std::string::npos) << f.status();
  }
  {
    GgufWriter w(1);
    auto f = GgufFile::Open(WriteTemp("v1.gguf", w.Bytes()));
    EXPECT_NE(f.status().message().find("version 1 is not supported"), std::string::npos) << f.status();
  }
  {
    auto w = TinyLlama();
    // A type kvshard does not decode (the imatrix-only IQ2 family).
    w.Tensor("blk.0.attn_q.weight", {256, 2}, /*IQ2_XXS*/ 16, std::vector<uint8_t>(132, 0));
    auto f = GgufFile::Open(WriteTemp("k.gguf", w.Bytes()));
    ASSERT_TRUE(f.ok()) << f.status();
    auto bytes = (*f)->TensorBytes(*(*f)->FindTensor("blk.0.attn_q.weight"));
    EXPECT_EQ(bytes.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(bytes.status().message().find("IQ2_XXS"), std::string::npos) << bytes.status();
    EXPECT_NE(bytes.status().message().find("blk.0.attn_q.weight"), std::string::npos);
  }
  // kvshard's own FP8 block type is never a GGUF type (its id is outside GGML's), nor is an id no
  // GGML version has: both are refused by id, with the list of what kvshard decodes.
  for (const uint32_t id : {static_cast<uint32_t>(GgmlType::kF8_E4M3), uint32_t{999}}) {
    SCOPED_TRACE(id);
    auto w = TinyLlama();
    w.Tensor("blk.0.attn_k.weight", {128, 2}, id, std::vector<uint8_t>(264, 0));
    auto f = GgufFile::Open(WriteTemp("id.gguf", w.Bytes()));
    ASSERT_TRUE(f.ok()) << f.status();
    auto bytes = (*f)->TensorBytes(*(*f)->FindTensor("blk.0.attn_k.weight"));
    EXPECT_EQ(bytes.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(bytes.status().message().find("(" + std::to_string(id) + ")"), std::string::npos) << bytes.status();
    EXPECT_NE(bytes.status().message().find("blk.0.attn_k.weight"), std::string::npos) << bytes.status();
    EXPECT_NE(bytes.status().message().find("supported: F32, F16"), std::string::npos) << bytes.status();
    EXPECT_EQ(bytes.status().message().find("F8_E4M3"), std::string::npos) << bytes.status();
  }
  {
    auto w = TinyLlama();
    w.Tensor("odd", {33}, /*Q4_0*/ 2, std::vector<uint8_t>(36, 0));
    auto f = GgufFile::Open(WriteTemp("odd.gguf", w.Bytes()));
    EXPECT_NE(f.status().message().find("not a multiple of the Q4_0 block size"), std::string::npos) << f.status();
  }
  {
    auto w = TinyLlama();
    w.Str("general.architecture", "llama");  // duplicate key
    auto f = GgufFile::Open(WriteTemp("dup.gguf", w.Bytes()));
    EXPECT_NE(f.status().message().find("appears twice"), std::string::npos) << f.status();
  }
}

TEST(GgufFileTest, WeightSourceReportsMissingTensorAndWrongArchitecture) {
  auto src = OpenGgufWeights(WriteTemp("tiny.gguf", TinyLlama().Bytes()));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config().num_kv_heads, 1);
  EXPECT_EQ((*src)->config().head_dim, 4);
  EXPECT_TRUE((*src)->config().tie_word_embeddings);
  std::vector<float> out(8 * 8);
  const int64_t shape[] = {8, 8};
  auto s = (*src)->ReadF32("model.layers.0.self_attn.q_proj.weight", shape, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("blk.0.attn_q.weight"), std::string::npos) << s;
  std::vector<float> emb(32);
  const int64_t wrong[] = {8, 4};
  s = (*src)->ReadF32("model.embed_tokens.weight", wrong, emb);
  EXPECT_NE(s.message().find("has shape [4, 8], expected [8, 4]"), std::string::npos) << s;

  GgufWriter w;
  w.Str("general.architecture", "gpt-neox");
  auto bad = OpenGgufWeights(WriteTemp("neox.gguf", w.Bytes()));
  EXPECT_NE(bad.status().message().find("architecture 'gpt-neox' is not supported"), std::string::npos);
}

// Gemma 3's layer pattern and local rope base as llama.cpp reads them: a bool per layer, or every
// Nth layer global, or (absent) every 6th; no sliding_window key: every layer global.
TEST(GgufFileTest, Gemma3LayerPatternsAsLlamaCppReadsThem) {
  auto gemma = [](int layers) {
    GgufWriter w;
    w.Str("general.architecture", "gemma3");
    w.U32("gemma3.block_count", layers);
    w.U32("gemma3.embedding_length", 64);
    w.U32("gemma3.feed_forward_length", 128);
    w.U32("gemma3.attention.head_count", 2);
    w.U32("gemma3.attention.head_count_kv", 1);
    w.U32("gemma3.attention.key_length", 32);
    w.U32("gemma3.context_length", 4096);
    w.F32("gemma3.attention.layer_norm_rms_epsilon", 1e-6f);
    w.TensorF32("token_embd.weight", {64, 4}, std::vector<float>(256, 0.5f));
    return w;
  };
  auto windows = [](GgufWriter w, const char* name) -> std::vector<int32_t> {
    auto src = OpenGgufWeights(WriteTemp(name, w.Bytes()));
    EXPECT_TRUE(src.ok()) << src.status();
    if (!src.ok()) return {-1};
    const ModelConfig& c = (*src)->config();
    EXPECT_TRUE(c.qk_norm && c.sandwich_norms && c.tie_word_embeddings);
    EXPECT_EQ(c.activation, Activation::kGeluTanh);
    EXPECT_FLOAT_EQ(c.embedding_scale, 8.0f);
    EXPECT_FLOAT_EQ(c.AttentionScale(), 1.0f / std::sqrt(32.0f));
    return c.layer_windows;
  };
  GgufWriter w = gemma(7);
  w.U32("gemma3.attention.sliding_window", 16);
  EXPECT_EQ(windows(w, "g6.gguf"), (std::vector<int32_t>{16, 16, 16, 16, 16, 0, 16}));
  w = gemma(4);
  w.U32("gemma3.attention.sliding_window", 16);
  w.BoolArray("gemma3.attention.sliding_window_pattern", {true, false, true, true});
  w.F32("gemma3.rope.freq_base_swa", 5000.0f);
  EXPECT_EQ(windows(w, "gb.gguf"), (std::vector<int32_t>{16, 0, 16, 16}));
  EXPECT_EQ((*OpenGgufWeights(WriteTemp("gb.gguf", w.Bytes())))->config().rope_local_theta, 5000.0);
  w = gemma(4);
  w.U32("gemma3.attention.sliding_window", 16);
  w.U32("gemma3.attention.sliding_window_pattern", 2);
  EXPECT_EQ(windows(w, "g2.gguf"), (std::vector<int32_t>{16, 0, 16, 0}));
  w = gemma(3);
  EXPECT_TRUE(windows(w, "gnone.gguf").empty());
  w = gemma(3);
  w.U32("gemma3.attention.sliding_window", 16);
  w.BoolArray("gemma3.attention.sliding_window_pattern", {true, false});
  auto bad = OpenGgufWeights(WriteTemp("gbad.gguf", w.Bytes()));
  EXPECT_NE(bad.status().message().find("sliding_window_pattern lists 2 layers, the model has 3"), std::string::npos)
      << bad.status();
}

TEST(GgufFileTest, ReadsTheRealSmolLm2File) {
  KVS_REQUIRE_SMOLLM2(path);
  auto src = OpenWeightSource(path);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& c = (*src)->config();
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_q_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.KvBytesPerToken(2), 2 * 30 * 3 * 64 * 2);
}

// NaN or Inf anywhere in a float tensor, or in a quantized block's scale, is refused with the
// tensor's name and the element or block; clean files pass.
TEST(GgufFileTest, NonFiniteWeightsAreFoundByNameAndPlace) {
  auto open = [](const std::string& name, const std::function<void(GgufWriter&)>& add) {
    GgufWriter w;
    w.Str("general.architecture", "llama");
    add(w);
    auto f = GgufFile::Open(WriteTemp(name, w.Bytes()));
    EXPECT_TRUE(f.ok()) << f.status();
    return std::move(*f);
  };
  std::vector<float> clean(97, 0.5f);
  auto good = open("finite.gguf", [&](GgufWriter& w) { w.TensorF32("a.weight", {97}, clean); });
  EXPECT_TRUE(CheckGgufWeightsFinite(*good).ok());
  std::vector<float> nan = clean;
  nan[54] = std::nanf("");
  auto f32 = open("nan_f32.gguf", [&](GgufWriter& w) {
    w.TensorF32("ok.weight", {97}, clean);
    w.TensorF32("token_embd.weight", {97}, nan);
  });
  absl::Status s = CheckGgufWeightsFinite(*f32);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tensor 'token_embd.weight'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("element 54"), std::string::npos) << s;
  std::vector<uint8_t> f16(2 * 17, 0);
  f16[2 * 16 + 1] = 0x7C;  // element 16: +Inf
  auto half = open("inf_f16.gguf", [&](GgufWriter& w) { w.Tensor("h.weight", {17}, 1, f16); });
  s = CheckGgufWeightsFinite(*half);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("element 16"), std::string::npos) << s;
  std::vector<uint8_t> q8(34 * 3, 0);
  q8[34 * 2 + 0] = 0x00;
  q8[34 * 2 + 1] = 0x7E;  // block 2's scale d: NaN
  auto q = open("nan_q8.gguf", [&](GgufWriter& w) { w.Tensor("q.weight", {96}, 8, q8); });
  s = CheckGgufWeightsFinite(*q);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("block 2"), std::string::npos) << s;
  std::vector<uint8_t> q41(20 * 2, 0);
  q41[20 + 3] = 0xFC;  // block 1's min m: -Inf
  auto m = open("inf_q41.gguf", [&](GgufWriter& w) { w.Tensor("m.weight", {64}, 3, q41); });
  s = CheckGgufWeightsFinite(*m);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("block 1"), std::string::npos) << s;
}

}  // namespace
}  // namespace kvs
