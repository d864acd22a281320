// What a Hugging Face tokenizer.json says about SentencePiece-style BPE (Llama 2, Mistral): the
// "▁" whitespace scheme and the byte fallback. Two layouts exist in the wild and both are read:
//   legacy:    normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer, decoder
//              Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)];
//   metaspace: no normalizer, pre-tokenizer Metaspace(replacement "▁", split false,
//              prepend_scheme always|first|never), decoder Sequence[ByteFallback, Metaspace].
// Anything else in those slots is refused by name at load, never tokenized differently.
#pragma once

#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kvs {

inline constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";  // U+2581, "▁"

struct SentencePieceConfig {
  enum class Prepend { kAlways, kFirst, kNever };  // "▁" before a piece of text: each, the text's first, none
  Prepend prepend = Prepend::kAlways;
  bool prepend_if_missing_only = false;  // Metaspace adds it only where the piece lacks one; Prepend always
  bool strip_leading_space = true;       // decoding drops the space the prepended "▁" became
  bool byte_fallback = false;            // characters outside the vocabulary become <0xXX> tokens
  bool fuse_unk = false;                 // consecutive unknowns become one <unk>
};

// nullopt for a tokenizer.json that is not SentencePiece-style (byte-level BPE); an error naming
// the part that kvshard does not implement.
absl::StatusOr<std::optional<SentencePieceConfig>> SentencePieceConfigFromJson(const nlohmann::json& root);

}  // namespace kvs
