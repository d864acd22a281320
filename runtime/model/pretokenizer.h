// Pre-tokenization: splitting text into pieces before BPE, as Hugging Face `tokenizers` does.
// A pipeline of steps, each splitting every piece further:
//   Split(regex, Isolated)  matches and the text between them both become pieces
//   Digits(individual)      every Unicode number character becomes its own piece
//   ByteLevel(use_regex)    the GPT-2 pattern (a Split), then bytes -> printable characters
// Regexes run on PCRE2 with UTF and Unicode properties, so \p{L}, \p{N} and (?!\S) behave as
// in the Oniguruma engine `tokenizers` uses.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace kvs {

// GPT-2's pattern, used by ByteLevel(use_regex=true).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3's pattern (also tokenizer.ggml.pre = "llama-bpe").
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2's pattern: as Llama 3 but single digits.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class RegexSplitter;

class PreTokenizer {
 public:
  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // From tokenizer.json's "pre_tokenizer" object.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& j);
  // From GGUF's tokenizer.ggml.pre name ("smollm", "llama-bpe", "qwen2", "gpt2", "default").
  static absl::StatusOr<PreTokenizer> FromGgufName(const std::string& name);

  absl::Status AddSplit(std::string_view pattern);
  absl::Status AddDigits();
  void set_add_prefix_space(bool v) { add_prefix_space_ = v; }

  // Splits valid UTF-8 `text` into pieces (views into `text`, or into an internal prefixed copy).
  std::vector<std::string> Split(std::string_view text) const;

 private:
  std::vector<std::unique_ptr<RegexSplitter>> steps_;
  bool add_prefix_space_ = false;
};

}  // namespace kvs
