// The engine against Hugging Face transformers (float32) on real and random checkpoints:
// logits within a stated tolerance with the same top-1, and 40-token greedy continuations
// identical token for token — alone, batched, with chunked prefill, with page size 1, and under
// forced preemption. Goldens: tests/reference/make_goldens.py and make_family_goldens.py (Qwen3,
// Gemma 3: the tiny Gemma's window of 7 tokens is crossed many times by its prompts).
#include <cctype>
#include <cmath>

#include "gtest/gtest.h"
#include "runtime/engine/model_runner.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/tokenizer.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GoldenPath;
using testing::LoadCpuModel;
using testing::ReadJson;
using testing::PrefillLogits;
using testing::RunGreedy;

// float32 both sides; the error comes from summation order. Random checkpoints have logits of
// magnitude ~1; SmolLM2's reach ~30 over 30 layers (measured: 6e-5 max error there).
constexpr float kTinyLogitTolerance = 2e-4f;
constexpr float kSmolLogitTolerance = 1e-3f;

struct Compared {
  float max_abs = 0;
  bool same_top1 = true;
};
Compared Compare(const float* got, const float* want, int64_t n) {
  Compared c;
  int64_t g1 = 0, w1 = 0;
  for (int64_t i = 0; i < n; ++i) {
    c.max_abs = std::max(c.max_abs, std::fabs(got[i] - want[i]));
    if (got[i] > got[g1]) g1 = i;
    if (want[i] > want[w1]) w1 = i;
  }
  c.same_top1 = g1 == w1;
  return c;
}

// A real model's last-position logits for each golden prompt against transformers' (stored as raw
// float32 files beside the JSON), within `tolerance`, with the same top-1; the error printed.
void ExpectLastLogitsMatch(const std::string& model_path, const std::string& golden_json, float tolerance,
                           const char* name) {
  auto lm = LoadCpuModel(model_path);
  ASSERT_NE(lm, nullptr);
  const auto golden = ReadJson(GoldenPath(golden_json));
  const int32_t vocab = lm->weights->config().vocab_size;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> want =
        testing::ReadLogitsFile(GoldenPath("models/" + p["last_logits_file"].get<std::string>()), vocab);
    ASSERT_EQ(want.size(), static_cast<size_t>(vocab));
    const std::vector<float> got = PrefillLogits(*lm, ids, /*all_rows=*/false);
    const Compared c = Compare(got.data(), want.data(), vocab);
    EXPECT_LT(c.max_abs, tolerance) << name << ", prompt of " << ids.size() << " tokens";
    EXPECT_TRUE(c.same_top1) << name << ", prompt of " << ids.size() << " tokens";
    std::printf("%s prompt of %zu tokens: max |logit - HF| = %.2e (tolerance %.0e)\n", name, ids.size(), c.max_abs,
                tolerance);
  }
}

class RandomCheckpointTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RandomCheckpointTest, LogitsMatchTransformersAtEveryPosition) {
  auto lm = LoadCpuModel(GoldenPath("models/" + GetParam()));
  ASSERT_NE(lm, nullptr);
  const auto golden = ReadJson(GoldenPath("models/" + GetParam() + ".json"));
  const int32_t vocab = lm->weights->config().vocab_size;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> got = PrefillLogits(*lm, ids, /*all_rows=*/true);
    ASSERT_EQ(got.size(), ids.size() * vocab);
    for (size_t row = 0; row < ids.size(); ++row) {
      const auto want = p["logits"][row].get<std::vector<float>>();
      const Compared c = Compare(got.data() + row * vocab, want.data(), vocab);
      EXPECT_LT(c.max_abs, kTinyLogitTolerance) << GetParam() << " position " << row;
      EXPECT_TRUE(c.same_top1) << GetParam() << " position " << row;
    }
  }
}

TEST_P(RandomCheckpointTest, GreedyMatchesTransformersAloneBatchedChunkedAndPreempted) {
  auto lm = LoadCpuModel(GoldenPath("models/" + GetParam()));
  ASSERT_NE(lm, nullptr);
  const auto golden = ReadJson(GoldenPath("models/" + GetParam() + ".json"));
  std::vector<std::vector<int32_t>> prompts, want;
  for (const auto& p : golden["prompts"]) {
    prompts.push_back(p["prompt_ids"].get<std::vector<int32_t>>());
    want.push_back(p["greedy"].get<std::vector<int32_t>>());
  }
  const int32_t n = static_cast<int32_t>(want[0].size());
  EngineConfig base;
  base.kv_cache_bytes = 8 << 20;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(RunGreedy(*lm, {prompts[i]}, n, base)[0], want[i]) << "alone, prompt " << i;
  }
  EXPECT_EQ(RunGreedy(*lm, prompts, n, base), want) << "batched";
  EngineConfig chunked = base;
  chunked.scheduler.max_tokens_per_step = 5;
  chunked.scheduler.block_size = 1;
  EXPECT_EQ(RunGreedy(*lm, prompts, n, chunked), want) << "chunked prefill, page size 1";
  // A cache that holds the longest sequence alone cannot hold the others beside it (7 blocks x
  // 16 tokens without sliding windows; with them, the global group's blocks and each windowed
  // group's window).
  // Steps of 16 tokens keep a windowed group's share small (its window plus one step's tokens).
  EngineConfig tight = base;
  tight.scheduler.block_size = 16;
  tight.scheduler.max_tokens_per_step = 16;
  const ModelConfig& mc = lm->weights->config();
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size() + n);
  const int64_t blocks =
      KvGroups(mc.num_layers, mc.layer_windows).BlocksHeld(longest, 16, tight.scheduler.max_tokens_per_step);
  tight.kv_cache_bytes = blocks * KvCache::BytesPerBlock(mc, lm->backend->DefaultKvDType(), 16);
  tight.preemption_mode = PreemptionMode::kRecompute;
  int64_t preemptions = 0, swaps = 0;
  EXPECT_EQ(RunGreedy(*lm, prompts, n, tight, &preemptions, &swaps), want) << "under preemption by recompute";
  EXPECT_GT(preemptions, 0) << "the tight cache should have forced preemption";
  EXPECT_EQ(swaps, 0);
  // The same pressure relieved by swapping blocks to host memory and back.
  tight.preemption_mode = PreemptionMode::kSwap;
  tight.swap_space_bytes = 64 * 16 * lm->weights->config().KvBytesPerToken(4);
  EXPECT_EQ(RunGreedy(*lm, prompts, n, tight, &preemptions, &swaps), want) << "under preemption by swap";
  EXPECT_GT(swaps, 0) << "the tight cache should have forced swapping";
  // With the measured cost model deciding (whichever it picks, the tokens must not change).
  tight.preemption_mode = PreemptionMode::kAuto;
  EXPECT_EQ(RunGreedy(*lm, prompts, n, tight, &preemptions, &swaps), want) << "under preemption chosen by cost";
  EXPECT_GT(preemptions, 0);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, RandomCheckpointTest,
                         ::testing::Values("tiny-llama31", "tiny-qwen2", "tiny-mistral", "tiny-qwen3", "tiny-gemma3",
                                           "tiny-mistral-swa", "tiny-qwen2-swa",
                                           // FP8 files written by llm-compressor and by transformers;
                                           // their goldens run torch's decode of the same codes and
                                           // scales (make_fp8_logits_goldens.py)
                                           "tiny-llama31-fp8-llmc-channel", "tiny-llama31-fp8-llmc-block",
                                           "tiny-llama31-fp8-transformers"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string n = p.param;
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// Checkpoints as llama.cpp's own converter writes them to GGUF (tests/reference/
// make_llama_cpp_gguf.py: bf16, its tensor names and metadata keys, Gemma's norms stored as 1 + w,
// no Gemma layer-pattern key) give the logits transformers gives on the HF checkpoints they came
// from, at every position: the GGUF qwen3 and gemma3 paths on files nobody here formatted.
void ExpectEveryPositionMatches(const std::string& gguf, const std::string& golden_json, const char* arch) {
  auto lm = LoadCpuModel(GoldenPath(gguf));
  ASSERT_NE(lm, nullptr);
  EXPECT_EQ(lm->weights->config().architecture, arch);
  EXPECT_TRUE(lm->weights->config().qk_norm);
  const auto golden = ReadJson(GoldenPath(golden_json));
  const int32_t vocab = lm->weights->config().vocab_size;
  float worst = 0;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> got = PrefillLogits(*lm, ids, /*all_rows=*/true);
    ASSERT_EQ(got.size(), ids.size() * vocab);
    for (size_t row = 0; row < ids.size(); ++row) {
      const auto want = p["logits"][row].get<std::vector<float>>();
      const Compared c = Compare(got.data() + row * vocab, want.data(), vocab);
      EXPECT_LT(c.max_abs, kTinyLogitTolerance) << arch << " position " << row;
      EXPECT_TRUE(c.same_top1) << arch << " position " << row;
      worst = std::max(worst, c.max_abs);
    }
  }
  std::printf("%s from llama.cpp's converter: max |logit - HF| = %.2e\n", arch, worst);
}

TEST(LlamaCppGgufTest, Qwen3FromLlamaCppsConverterMatchesTransformers) {
  ExpectEveryPositionMatches("models/tiny-qwen3.llama-cpp.gguf", "models/tiny-qwen3.json", "qwen3");
}

TEST(LlamaCppGgufTest, Gemma3FromLlamaCppsConverterMatchesTransformers) {
  ExpectEveryPositionMatches("models/tiny-gemma3.llama-cpp.gguf", "models/tiny-gemma3.llama-cpp.json", "gemma3");
}

TEST(SmolLm2Test, LastPositionLogitsMatchTransformers) {
  KVS_REQUIRE_SMOLLM2(path);
  ExpectLastLogitsMatch(path, "models/smollm2.json", kSmolLogitTolerance, "SmolLM2");
}

TEST(SmolLm2Test, GreedyContinuationsMatchTransformersInOneBatch) {
  KVS_REQUIRE_SMOLLM2(path);
  auto lm = LoadCpuModel(path);
  ASSERT_NE(lm, nullptr);
  const auto golden = ReadJson(GoldenPath("models/smollm2.json"));
  std::vector<std::vector<int32_t>> prompts, want;
  for (const auto& p : golden["prompts"]) {
    prompts.push_back(p["prompt_ids"].get<std::vector<int32_t>>());
    want.push_back(p["greedy"].get<std::vector<int32_t>>());
  }
  EngineConfig config;
  config.kv_cache_bytes = 64 << 20;
  const auto got = RunGreedy(*lm, prompts, static_cast<int32_t>(want[0].size()), config);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "prompt " << i;
}

// google/gemma-3-270m as llama.cpp's quantizer wrote it (Q4_K_M: Q8_0 embeddings, Q5_0 / Q4_K /
// Q6_K / Q8_0 layers), against transformers on the same file (dequantized, float32, eager
// attention). Its third prompt is 700 tokens: the 512-token window of 15 of its 18 layers is
// crossed. Measured: 2-4e-5 (printed by the test).
constexpr float kGemma3LogitTolerance = 5e-4f;

TEST(Gemma3Test, LastPositionLogitsMatchTransformers) {
  KVS_REQUIRE_GEMMA3(path);
  ExpectLastLogitsMatch(path, "models/gemma3-270m.json", kGemma3LogitTolerance, "Gemma 3 270M");
}

// Gemma 3's SentencePiece vocabulary (262,144 pieces, byte fallback, no space prefix, user-defined
// whitespace runs) from the GGUF, against llama.cpp's tokenizer on the same file
// (tests/reference/make_gemma3_tokenizer_goldens.py says why not transformers' GGUF conversion).
TEST(Gemma3Test, TokenizerFromTheGgufEncodesAsLlamaCpp) {
  KVS_REQUIRE_GEMMA3(path);
  auto gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto corpus = ReadJson(GoldenPath("tokenizer/gemma3_corpus.json"));
  ASSERT_GE(corpus.size(), 30u);
  for (const auto& c : corpus) {
    const std::string text = c["text"].get<std::string>();
    auto got = tok->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, c["ids"].get<std::vector<int32_t>>()) << text;
    // And back: decoding without the BOS gives the text again (byte fallback keeps every byte).
    const std::vector<int32_t> body(got->begin() + 1, got->end());
    EXPECT_EQ(tok->Decode(body, /*skip_special=*/false), text);
  }
}

TEST(Gemma3Test, GreedyContinuationsMatchTransformersInOneBatch) {
  KVS_REQUIRE_GEMMA3(path);
  auto lm = LoadCpuModel(path);
  ASSERT_NE(lm, nullptr);
  const auto golden = ReadJson(GoldenPath("models/gemma3-270m.json"));
  std::vector<std::vector<int32_t>> prompts, want;
  int32_t n = 0;
  for (const auto& p : golden["prompts"]) {
    prompts.push_back(p["prompt_ids"].get<std::vector<int32_t>>());
    want.push_back(p["greedy"].get<std::vector<int32_t>>());
    n = std::max<int32_t>(n, static_cast<int32_t>(want.back().size()));
  }
  EngineConfig config;
  config.kv_cache_bytes = 64 << 20;
  config.scheduler.max_tokens_per_step = 256;  // the long prompt in chunks: windows across chunk boundaries
  const auto got = RunGreedy(*lm, prompts, n, config);
  for (size_t i = 0; i < want.size(); ++i) {
    const std::vector<int32_t> head(got[i].begin(), got[i].begin() + want[i].size());
    EXPECT_EQ(head, want[i]) << "prompt " << i;
  }
}

}  // namespace
}  // namespace kvs
