// The tokenizer against the Hugging Face `tokenizers` library (goldens from
// tests/reference/make_goldens.py): the same ids on a corpus of Unicode, emoji, digits, code,
// runs of spaces and special tokens, under three pre-tokenizer set-ups; and the GGUF-loaded
// tokenizer agreeing with the tokenizer.json one.
#include "runtime/model/tokenizer.h"

#include <chrono>
#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/gguf_file.h"
#include "tests/support/engine_harness.h"
#include "tests/support/gguf_writer.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

using testing::GoldenPath;
using testing::ReadJson;

// Writes the committed SmolLM2 tokenizer.json with one golden case's pre-tokenizer applied.
std::string VariantFile(const nlohmann::json& c) {
  nlohmann::json base = ReadJson(GoldenPath("tokenizer/smollm2_tokenizer.json"));
  base["pre_tokenizer"] = c["pre_tokenizer"];
  base["model"]["ignore_merges"] = c["ignore_merges"];
  const std::string path = ::testing::TempDir() + "/tok_" + c["variant"].get<std::string>() + ".json";
  std::ofstream(path) << base.dump();
  return path;
}

TEST(TokenizerTest, TokenizerJsonMatchesHfTokenizersOnCorpusForEveryPreTokenizer) {
  const auto cases = ReadJson(GoldenPath("tokenizer/smollm2_corpus.json"));
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    auto tok = Tokenizer::FromJsonFile(VariantFile(c));
    ASSERT_TRUE(tok.ok()) << tok.status();
    int checked = 0;
    for (const auto& e : c["encodings"]) {
      const std::string text = e["text"].get<std::string>();
      auto ids = tok->Encode(text, /*add_special_tokens=*/true);
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_EQ(*ids, e["ids"].get<std::vector<int32_t>>()) << c["variant"] << ": " << text;
      // Decoding returns the text (the corpus has no normalisation to undo).
      EXPECT_EQ(tok->Decode(*ids, /*skip_special=*/false), text) << c["variant"];
      ++checked;
    }
    EXPECT_GE(checked, 25);
  }
}

// SentencePiece-style BPE (Llama 2 / Mistral layouts, tokenizer.json written by `tokenizers`
// itself: tests/reference/make_spm_tokenizer_goldens.py): the same ids with and without the BOS
// template, and the same decoded text with and without special tokens, on a corpus of spaces,
// added tokens inside text, CJK outside the vocabulary (byte fallback), emoji ZWJ sequences and
// combining marks.
TEST(TokenizerTest, SentencePieceTokenizerJsonMatchesHfTokenizers) {
  for (const std::string style : {"legacy", "metaspace"}) {
    auto tok = Tokenizer::FromJsonFile(GoldenPath("tokenizer/spm_" + style + "_tokenizer.json"));
    ASSERT_TRUE(tok.ok()) << style << ": " << tok.status();
    int byte_fallbacks = 0, checked = 0;
    for (const auto& e : ReadJson(GoldenPath("tokenizer/spm_" + style + "_corpus.json"))) {
      const std::string text = e["text"].get<std::string>();
      const bool special = e["add_special_tokens"].get<bool>();
      auto ids = tok->Encode(text, special);
      ASSERT_TRUE(ids.ok()) << ids.status();
      const auto want = e["ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(*ids, want) << style << " (add_special_tokens " << special << "): " << text;
      EXPECT_EQ(tok->Decode(want, /*skip_special=*/false), e["decoded"].get<std::string>()) << style << ": " << text;
      EXPECT_EQ(tok->Decode(want, /*skip_special=*/true), e["decoded_skip"].get<std::string>()) << style << ": " << text;
      for (int32_t id : want) byte_fallbacks += tok->TokenString(id).rfind("<0x", 0) == 0;
      ++checked;
    }
    EXPECT_EQ(checked, 40) << style;
    EXPECT_GT(byte_fallbacks, 20) << style << ": the corpus should reach the byte fallback";
    EXPECT_EQ(tok->bos_id(), 1);
  }
}

// A GGUF SentencePiece vocabulary (scores, no merges: tests/reference/make_spm_gguf_goldens.py)
// against transformers' GGUF converter on the same corpus: the merges derived from the scores,
// the space prefix, the byte fallback and the BOS the file asks for.
TEST(TokenizerTest, GgufSentencePieceVocabularyMatchesTransformersConverter) {
  auto gguf = GgufFile::Open(GoldenPath("tokenizer/spm_llama.gguf"));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status();
  int checked = 0;
  for (const auto& e : ReadJson(GoldenPath("tokenizer/spm_gguf_corpus.json"))) {
    const std::string text = e["text"].get<std::string>();
    const auto want = e["ids"].get<std::vector<int32_t>>();
    auto ids = tok->Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, want) << text;
    auto with_bos = tok->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(with_bos.ok());
    ASSERT_FALSE(with_bos->empty());
    EXPECT_EQ(with_bos->front(), 1) << text;
    EXPECT_EQ(std::vector<int32_t>(with_bos->begin() + 1, with_bos->end()), want) << text;
    EXPECT_EQ(tok->Decode(want, /*skip_special=*/true), e["decoded"].get<std::string>()) << text;
    ++checked;
  }
  EXPECT_EQ(checked, 20);
  EXPECT_TRUE(tok->IsSpecial(2));
  EXPECT_EQ(tok->eos_id(), 2);
}

// A GGUF SentencePiece vocabulary without its scores, or with too few, is refused by name.
TEST(TokenizerTest, GgufSentencePieceVocabularyWithoutMatchingScoresIsRefused) {
  for (const int scores : {-1, 2}) {
    testing::GgufWriter w;
    w.Str("general.architecture", "llama");
    w.Str("tokenizer.ggml.model", "llama");
    w.StrArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>",
                                         "\xE2\x96\x81"
                                         "a"});
    if (scores >= 0) w.F32Array("tokenizer.ggml.scores", std::vector<float>(scores, 0.0f));
    auto gguf = GgufFile::Open(testing::WriteTemp("spm_bad_scores.gguf", w.Bytes()));
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    auto tok = Tokenizer::FromGguf(**gguf);
    ASSERT_FALSE(tok.ok());
    const std::string want = scores < 0 ? "tokenizer.ggml.scores" : "2 token scores for 4 tokens";
    EXPECT_NE(std::string(tok.status().message()).find(want), std::string::npos) << tok.status();
  }
}

TEST(TokenizerTest, SentencePieceLayoutsKvshardDoesNotImplementAreRefusedByName) {
  const auto base = ReadJson(GoldenPath("tokenizer/spm_legacy_tokenizer.json"));
  auto refused = [&](nlohmann::json j, const std::string& why) {
    const std::string path = ::testing::TempDir() + "/spm_bad.json";
    std::ofstream(path) << j.dump();
    auto tok = Tokenizer::FromJsonFile(path);
    ASSERT_FALSE(tok.ok()) << why;
    EXPECT_NE(std::string(tok.status().message()).find(why), std::string::npos) << tok.status();
  };
  nlohmann::json j = base;
  j["normalizer"] = {{"type", "NFKC"}};
  refused(j, "normalizer step 'NFKC'");
  j = base;
  j["decoder"]["decoders"][0] = {{"type", "ByteLevel"}};
  refused(j, "decoder step 'ByteLevel'");
  j = base;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", true}};
  refused(j, "Metaspace with split true");
}

TEST(TokenizerTest, GgufTokenizerMatchesHfTokenizersOnCorpus) {
  KVS_REQUIRE_SMOLLM2(path);
  auto gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // GGUF's "smollm" pre-tokenizer is SmolLM2's Digits + ByteLevel set-up.
  for (const auto& c : ReadJson(GoldenPath("tokenizer/smollm2_corpus.json"))) {
    if (c["variant"] != "smollm2") continue;
    for (const auto& e : c["encodings"]) {
      auto ids = tok->Encode(e["text"].get<std::string>(), true);
      ASSERT_TRUE(ids.ok());
      EXPECT_EQ(*ids, e["ids"].get<std::vector<int32_t>>()) << e["text"];
    }
  }
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->IsSpecial(1));
  EXPECT_EQ(tok->TokenString(1), "<|im_start|>");
}

TEST(TokenizerTest, RejectsInvalidUtf8WithOffset) {
  auto tok = Tokenizer::FromJsonFile(GoldenPath("tokenizer/smollm2_tokenizer.json"));
  ASSERT_TRUE(tok.ok());
  for (const std::string& bad : {std::string("ok\xff"), std::string("ab\xc3"), std::string("\xed\xa0\x80"),
                                std::string("\xc0\xaf")}) {
    auto ids = tok->Encode(bad, true);
    ASSERT_FALSE(ids.ok());
    EXPECT_NE(ids.status().message().find("not valid UTF-8"), std::string::npos);
  }
}

TEST(TokenizerTest, DecodeReplacesBrokenUtf8AndStreamingHelpersFindIncompleteTails) {
  auto tok = Tokenizer::FromJsonFile(GoldenPath("tokenizer/smollm2_tokenizer.json"));
  ASSERT_TRUE(tok.ok());
  auto ids = tok->Encode("😀", false);
  ASSERT_TRUE(ids.ok());
  ASSERT_GT(ids->size(), 1u) << "an emoji should span byte tokens";
  std::vector<int32_t> first(ids->begin(), ids->begin() + 1);
  const std::string partial = tok->DecodeBytes(first, true);
  EXPECT_GT(IncompleteUtf8Suffix(partial), 0u);
  EXPECT_EQ(tok->Decode(first, true), "\xEF\xBF\xBD");
  EXPECT_EQ(IncompleteUtf8Suffix("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("a\xF0\x9F"), 2u);
}

TEST(TokenizerTest, MalformedTokenizerJsonGivesClearErrors) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::string& body) {
    std::ofstream(dir + "/" + name) << body;
    return dir + "/" + name;
  };
  auto missing = Tokenizer::FromJsonFile(dir + "/nope.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto garbage = Tokenizer::FromJsonFile(write("garbage.json", "{not json"));
  EXPECT_NE(garbage.status().message().find("not valid JSON"), std::string::npos);
  auto unigram = Tokenizer::FromJsonFile(write("unigram.json", R"({"model": {"type": "Unigram"}})"));
  EXPECT_EQ(unigram.status().code(), absl::StatusCode::kUnimplemented);
  auto bad_merge = Tokenizer::FromJsonFile(
      write("merge.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [42]}})"));
  EXPECT_NE(bad_merge.status().message().find("merge #0"), std::string::npos) << bad_merge.status();
  auto nfc = Tokenizer::FromJsonFile(
      write("nfc.json", R"({"normalizer": {"type": "NFC"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"));
  EXPECT_EQ(nfc.status().code(), absl::StatusCode::kUnimplemented);
  auto bad_split = Tokenizer::FromJsonFile(write("split.json", R"({"pre_tokenizer": {"type": "Split", "pattern":
      {"Regex": "(unclosed"}, "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"));
  EXPECT_NE(bad_split.status().message().find("does not compile"), std::string::npos) << bad_split.status();
}

// Long single pieces, whitespace runs, CJK and emoji runs and texts dense with special tokens:
// the heap merge and the forward-only special-token scan give HF's ids exactly.
TEST(TokenizerTest, LongAndHostileInputsMatchHfTokenizers) {
  auto tok = Tokenizer::FromJsonFile(GoldenPath("tokenizer/smollm2_tokenizer.json"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto cases = ReadJson(GoldenPath("tokenizer/smollm2_long_inputs.json"));
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << text.substr(0, 40) << "... (" << text.size() << " bytes)";
  }
}

// Quadratic merging took 200+ s on this input and quadratic special-token search 19 s on 10,000
// messages; linear work takes well under a second for each. The bounds are loose (a shared CI
// core), far below what quadratic behaviour costs; docs/performance.md has the measured times.
TEST(TokenizerTest, HostileLengthsTokenizeInLinearTime) {
  auto tok = Tokenizer::FromJsonFile(GoldenPath("tokenizer/smollm2_tokenizer.json"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto seconds = [&](const std::string& text) {
    const auto t0 = std::chrono::steady_clock::now();
    auto ids = tok->Encode(text, /*add_special_tokens=*/false);
    EXPECT_TRUE(ids.ok());
    EXPECT_FALSE(ids->empty());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const double letters = seconds(std::string(500000, 'a'));
  std::string cjk;
  for (int i = 0; i < 80000; ++i) cjk += "\xe4\xb8\xad";  // 中
  const double han = seconds(cjk);
  std::string chat;
  for (int i = 0; i < 10000; ++i) chat += "<|im_start|>user\nx<|im_end|>\n";
  const double turns = seconds(chat);
  std::printf("500,000 'a': %.3f s; 80,000 CJK: %.3f s; 10,000 chat turns: %.3f s\n", letters, han, turns);
  EXPECT_LT(letters, 5.0);
  EXPECT_LT(han, 5.0);
  EXPECT_LT(turns, 2.0);
}

}  // namespace
}  // namespace kvs
