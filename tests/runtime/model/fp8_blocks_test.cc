// FP8 weights kept in 8 bits: kvshard's F8_E4M3 blocks (128 E4M3 codes and their f32 scale).
// - Packing a checkpoint's codes and scales (PackFp8Blocks) keeps every weight's value exactly
//   (code x scale, as the float load computes it) in each layout that has the form, and declines
//   the layouts that do not (the caller then decodes to float);
// - `--quantize fp8` (QuantizeToFp8Blocks) rounds each weight to its nearest code under its block's
//   scale, and the quantizing source quantizes the projections only: embedding, LM head, norms and
//   rows that are not whole blocks stay as stored;
// - a model quantized so runs on the CPU near the unquantized one;
// - a Hugging Face FP8 checkpoint of whole 128-column rows (per-channel scales, the layout
//   compressed-tensors writes) reads its projections as these blocks, and a model loaded through
//   them gives the logits of the same checkpoint decoded to float, bit for bit.
// Seeds are printed on failure.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/ggml_decode.h"
#include "kernels/common/kv_quant.h"
#include "kernels/cpu/cpu_backend.h"
#include "nlohmann/json.hpp"
#include "runtime/model/fp8_checkpoint.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/quantizing_weight_source.h"
#include "runtime/model/weight_source.h"
#include "tests/support/engine_harness.h"

namespace kvs {
namespace {

std::vector<uint8_t> RandomCodes(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> codes(n);
  for (auto& c : codes) {
    do c = static_cast<uint8_t>(byte(rng));
    while ((c & 0x7f) == 0x7f);  // not NaN
  }
  return codes;
}

TEST(Fp8BlocksTest, PackingKeepsEveryWeightOfEachLayoutThatHasTheForm) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t rows = 6, cols = 384;
  const std::vector<uint8_t> codes = RandomCodes(rows * cols, rng);
  std::uniform_real_distribution<float> scale(1e-4f, 1e-1f);
  struct Layout {
    const char* name;
    std::vector<int64_t> scale_shape;
    Fp8Scheme scheme;
    bool packs;
  };
  const Layout layouts[] = {
      {"per tensor", {1}, {"compressed-tensors"}, true},
      {"per channel", {rows, 1}, {"compressed-tensors"}, true},
      {"128 x 128 blocks", {1, 3}, {"fp8", 128, 128}, true},
      {"2 x 256 blocks", {3, 2}, {"fp8", 2, 256}, true},  // scales change at column 256: a block boundary
      {"4 x 64 blocks", {2, 6}, {"fp8", 4, 64}, false},   // a scale changes inside a 128-column block
  };
  for (const Layout& l : layouts) {
    SCOPED_TRACE(l.name);
    auto grid = ResolveFp8Scale(rows, cols, l.scale_shape, l.scheme, "w");
    ASSERT_TRUE(grid.ok()) << grid.status();
    int64_t n = 1;
    for (int64_t d : l.scale_shape) n *= d;
    std::vector<float> s(n);
    for (float& v : s) v = scale(rng);
    const auto packed = PackFp8Blocks(codes, rows, cols, s, *grid);
    ASSERT_EQ(packed.has_value(), l.packs);
    if (!packed) continue;
    ASSERT_EQ(packed->size(), static_cast<size_t>(rows * cols / kF8BlockElems * (kF8BlockElems + 4)));
    std::vector<float> got(rows * cols);
    DequantizeToF32(GgmlType::kF8_E4M3, *packed, got);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const float want = Fp8E4M3ToFloat(codes[r * cols + c]) * s[grid->At(r, c)];
        ASSERT_EQ(std::memcmp(&got[r * cols + c], &want, 4), 0)
            << "row " << r << ", column " << c << ": " << got[r * cols + c] << " vs " << want;
      }
    }
  }
  // Rows that are not whole blocks (tiny-llama31's 96 columns) have no such form.
  const Fp8ScaleGrid per_tensor{rows, 96, 1};
  EXPECT_FALSE(PackFp8Blocks(std::vector<uint8_t>(rows * 96), rows, 96, std::vector<float>{1.0f}, per_tensor));
}

TEST(Fp8BlocksTest, QuantizingRoundsEachWeightToItsNearestCode) {
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t rows = 5, cols = 256;
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(rows * cols);
  for (float& v : w) v = normal(rng);
  for (int64_t e = 0; e < kF8BlockElems; ++e) w[2 * cols + e] = 0.0f;  // an all-zero block
  w[7] = 3.0f;                                                         // an outlier
  const std::vector<uint8_t> blocks = QuantizeToFp8Blocks(w, rows, cols);
  std::vector<float> got(rows * cols);
  DequantizeToF32(GgmlType::kF8_E4M3, blocks, got);
  for (int64_t b = 0; b < rows * cols / kF8BlockElems; ++b) {
    float amax = 0.0f, s;
    for (int64_t e = 0; e < kF8BlockElems; ++e) amax = std::max(amax, std::fabs(w[b * kF8BlockElems + e]));
    std::memcpy(&s, blocks.data() + b * (kF8BlockElems + 4) + kF8BlockElems, 4);
    ASSERT_EQ(s, amax / 448.0f) << "block " << b;
    for (int64_t e = 0; e < kF8BlockElems; ++e) {
      const int64_t i = b * kF8BlockElems + e;
      // Half a code step: 2^-4 of the value for normal codes (3 mantissa bits), 2^-10 of the scale
      // below 2^-6 (subnormal steps of 2^-9); one float rounding of code x scale besides.
      const double step =
          std::max(std::ldexp(static_cast<double>(std::fabs(w[i])), -4), std::ldexp(static_cast<double>(s), -10));
      ASSERT_LE(std::fabs(got[i] - w[i]), step * 1.0001 + 1e-12) << "weight " << i << ": " << w[i] << " -> " << got[i];
    }
  }
  EXPECT_EQ(got[2 * cols + 5], 0.0f);
}

// A preset of whole 128-column blocks (hidden 128, FFN 256, 4 x 32 query heads) and one that is not
// (hidden 96), written for the random source.
class Fp8QuantizeSourceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("kvs_fp8_presets_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_ / "models");
    for (auto [name, hidden] : {std::pair<const char*, int>{"blocks128", 128}, {"cols96", 96}}) {
      std::ofstream(dir_ / "models" / (std::string(name) + ".json"))
          << R"({"model_type": "llama", "vocab_size": 301, "hidden_size": )" << hidden
          << R"(, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 32, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false})";
    }
    setenv("KVS_CONFIG_DIR", dir_.c_str(), 1);
  }
  static void TearDownTestSuite() {
    unsetenv("KVS_CONFIG_DIR");
    std::filesystem::remove_all(dir_);
  }
  static inline std::filesystem::path dir_;
};

TEST_F(Fp8QuantizeSourceTest, QuantizesTheProjectionsOnly) {
  auto inner = OpenWeightSource("random:blocks128:3");
  ASSERT_TRUE(inner.ok()) << inner.status();
  auto plain = OpenWeightSource("random:blocks128:3");
  ASSERT_TRUE(plain.ok());
  const std::unique_ptr<WeightSource> src = QuantizeToFp8(std::move(*inner));
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                           "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.gate_proj.weight"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(src->StoredBlockType(name), GgmlType::kF8_E4M3);
    EXPECT_FALSE(src->RandomInitFor(name).has_value()) << "read through ReadRaw, to be quantized";
    const int64_t rows = std::string(name).find("gate") != std::string::npos ? 256 : 128;
    const int64_t cols = std::string(name).find("down") != std::string::npos ? 256 : 128;
    const std::vector<int64_t> shape = {rows, cols};
    auto raw = src->ReadRaw(name, shape);
    ASSERT_TRUE(raw.ok() && raw->has_value()) << raw.status();
    ASSERT_EQ((*raw)->type, GgmlType::kF8_E4M3);
    std::vector<float> got(rows * cols), want(rows * cols);
    DequantizeToF32(GgmlType::kF8_E4M3, (*raw)->bytes, got);
    ASSERT_TRUE((*plain)->ReadF32(name, shape, want).ok());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], std::fabs(want[i]) / 16 + 1e-4) << i;
  }
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.layers.0.input_layernorm.weight"}) {
    EXPECT_FALSE(src->StoredBlockType(name).has_value()) << name;
  }
  // Not whole blocks: nothing is quantized.
  auto narrow = OpenWeightSource("random:cols96");
  ASSERT_TRUE(narrow.ok());
  const std::unique_ptr<WeightSource> nsrc = QuantizeToFp8(std::move(*narrow));
  EXPECT_FALSE(nsrc->StoredBlockType("model.layers.0.self_attn.q_proj.weight").has_value());
  EXPECT_EQ(ParseWeightQuantization("int3").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(Fp8QuantizeSourceTest, AQuantizedModelRunsNearTheUnquantizedOne) {
  for (const char* spec : {"random:blocks128:5", "random:blocks128:5:F8_E4M3"}) {
    SCOPED_TRACE(spec);
    const bool stored = std::string(spec).ends_with("F8_E4M3");
    auto q = testing::LoadCpuModel(spec, nullptr, stored ? WeightQuantization::kNone : WeightQuantization::kFp8);
    auto f = testing::LoadCpuModel("random:blocks128:5");
    ASSERT_NE(q, nullptr);
    ASSERT_NE(f, nullptr);
    std::vector<int32_t> ids;
    for (int i = 0; i < 23; ++i) ids.push_back((i * 37 + 11) % 301);
    const auto gq = testing::PrefillLogits(*q, ids, /*all_rows=*/true);
    const auto gf = testing::PrefillLogits(*f, ids, /*all_rows=*/true);
    ASSERT_EQ(gq.size(), gf.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < gq.size(); ++i) {
      ASSERT_TRUE(std::isfinite(gq[i])) << i;
      num += (gq[i] - gf[i]) * (gq[i] - gf[i]);
      den += gf[i] * gf[i];
    }
    const double rel = std::sqrt(num / den);
    std::printf("%s%s vs float weights: relative logit error %.3f\n", spec, stored ? "" : " --quantize fp8", rel);
    // Quantized at load, each weight moves by at most 1/16 of itself; F8_E4M3 random codes are
    // other weights altogether (a different model), so only finiteness is asked of them.
    if (!stored) {
      EXPECT_LT(rel, 0.1);
    }
  }
}

// A Hugging Face checkpoint written here: Llama, hidden 128 (whole blocks), one layer; projections
// in F8_E4M3 codes with per-channel float32 scales ([rows, 1], compressed-tensors' "channel"),
// everything else float32. The safetensors layout is the format's: an 8-byte header length, the
// JSON header, the data.
class Fp8CheckpointBlocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kvs_fp8_blocks_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 4,
      "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 64, "max_position_embeddings": 256,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
      "quantization_config": {"quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"type": "float", "num_bits": 8,
        "strategy": "channel", "symmetric": true}}}}})";
    std::mt19937 rng(seed_);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    nlohmann::json header = nlohmann::json::object();
    std::string data;
    auto add = [&](const std::string& name, const char* dtype, std::vector<int64_t> shape, const void* bytes,
                   size_t n) {
      header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + n}}};
      data.append(static_cast<const char*>(bytes), n);
    };
    auto floats = [&](const std::string& name, std::vector<int64_t> shape, float spread, float mean = 0.0f) {
      std::vector<float> v(shape[0] * (shape.size() > 1 ? shape[1] : 1));
      for (float& x : v) x = mean + spread * normal(rng);
      add(name, "F32", shape, v.data(), v.size() * 4);
    };
    auto fp8 = [&](const std::string& name, int64_t rows, int64_t cols) {
      add(name, "F8_E4M3", {rows, cols}, RandomCodes(rows * cols, rng).data(), rows * cols);
      std::vector<float> scale(rows);
      for (float& x : scale) x = 1e-3f * (1.0f + std::fabs(normal(rng)));
      add(name + "_scale", "F32", {rows, 1}, scale.data(), rows * 4);
    };
    floats("model.embed_tokens.weight", {64, 128}, 1.0f);
    floats("model.layers.0.input_layernorm.weight", {128}, 0.1f, 1.0f);
    floats("model.layers.0.post_attention_layernorm.weight", {128}, 0.1f, 1.0f);
    floats("model.norm.weight", {128}, 0.1f, 1.0f);
    floats("lm_head.weight", {64, 128}, 0.1f);
    const std::string p = "model.layers.0.";
    fp8(p + "self_attn.q_proj.weight", 128, 128);
    fp8(p + "self_attn.k_proj.weight", 64, 128);
    fp8(p + "self_attn.v_proj.weight", 64, 128);
    fp8(p + "self_attn.o_proj.weight", 128, 128);
    fp8(p + "mlp.gate_proj.weight", 256, 128);
    fp8(p + "mlp.up_proj.weight", 256, 128);
    fp8(p + "mlp.down_proj.weight", 128, 256);
    std::string text = header.dump();
    text.resize((text.size() + 7) / 8 * 8, ' ');
    const uint64_t len = text.size();
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary);
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << text << data;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  const uint32_t seed_ = std::random_device{}();
};

// The same source with its blocks hidden: every tensor read as float32 (ReadF32), as before FP8
// stayed in 8 bits.
class FloatOnly final : public ForwardingWeightSource {
 public:
  using ForwardingWeightSource::ForwardingWeightSource;
  absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string&, std::span<const int64_t>) const override {
    return std::nullopt;
  }
  std::optional<GgmlType> StoredBlockType(const std::string&) const override { return std::nullopt; }
};

TEST_F(Fp8CheckpointBlocksTest, ProjectionsReadAsBlocksAndTheModelEqualsTheFloatLoad) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto src = OpenWeightSource(dir_.string());
  ASSERT_TRUE(src.ok()) << src.status();
  const std::string q = "model.layers.0.self_attn.q_proj.weight", down = "model.layers.0.mlp.down_proj.weight";
  EXPECT_EQ((*src)->StoredBlockType(q), GgmlType::kF8_E4M3);
  EXPECT_EQ((*src)->StoredBlockType(down), GgmlType::kF8_E4M3);
  EXPECT_FALSE((*src)->StoredBlockType("model.embed_tokens.weight").has_value());
  for (const auto& [name, rows, cols] : {std::tuple<std::string, int64_t, int64_t>{q, 128, 128}, {down, 128, 256}}) {
    const std::vector<int64_t> shape = {rows, cols};
    auto raw = (*src)->ReadRaw(name, shape);
    ASSERT_TRUE(raw.ok() && raw->has_value()) << name << ": " << raw.status();
    std::vector<float> blocks(rows * cols), floats(rows * cols);
    DequantizeToF32(GgmlType::kF8_E4M3, (*raw)->bytes, blocks);
    ASSERT_TRUE((*src)->ReadF32(name, shape, floats).ok());
    for (size_t i = 0; i < floats.size(); ++i) {
      ASSERT_EQ(std::memcmp(&blocks[i], &floats[i], 4), 0) << name << " element " << i;
    }
  }
  // Loaded through the blocks (the CPU decodes them at load) and as floats: the same logits.
  auto plain = OpenWeightSource(dir_.string());
  ASSERT_TRUE(plain.ok());
  const FloatOnly floats(std::move(*plain));
  CpuBackend cpu(size_t{1} << 30, CpuMath::kReference);
  auto wb = ModelWeights::Load(**src, cpu);
  auto wf = ModelWeights::Load(floats, cpu);
  ASSERT_TRUE(wb.ok()) << wb.status();
  ASSERT_TRUE(wf.ok()) << wf.status();
  const LayerWeights &lb = wb->layers()[0], &lf = wf->layers()[0];
  for (const auto& [name, mb, mf] :
       {std::tuple<const char*, const WeightMatrix*, const WeightMatrix*>{"qkv", &lb.qkv, &lf.qkv},
        {"o", &lb.o, &lf.o},
        {"gate_up", &lb.gate_up, &lf.gate_up},
        {"down", &lb.down, &lf.down}}) {
    ASSERT_EQ(mb->parts.size(), 1u) << name;
    EXPECT_EQ(mb->parts[0].dtype, DType::kF32) << name << ": the CPU decodes F8_E4M3 at load";
    ASSERT_EQ(mb->buffer.bytes(), mf->buffer.bytes()) << name;
    EXPECT_EQ(std::memcmp(mb->buffer.data(), mf->buffer.data(), mb->buffer.bytes()), 0)
        << name << ": weights loaded through the blocks differ from the float load";
  }
}

}  // namespace
}  // namespace kvs
