// BPE tokenizer, agreeing exactly with the Hugging Face `tokenizers` library, in two flavours:
// byte-level (GPT-2 family: SmolLM2, Llama 3, Qwen2; from GGUF metadata or a tokenizer.json) and
// SentencePiece-style (Llama 2, Mistral; from a tokenizer.json, sentencepiece_config.h):
//   1. added/special tokens are cut out of the text first (longest match wins);
//   2. byte-level: the rest is pre-tokenized (pretokenizer.h) and every piece's bytes are mapped
//      to printable characters (GPT-2's bytes_to_unicode); SentencePiece: each piece's spaces
//      become "▁" and a "▁" is prepended as the file says;
//   3. each piece is merged pair by pair, lowest merge rank first, leftmost on ties; a
//      SentencePiece symbol outside the vocabulary falls back to its bytes' <0xXX> tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/model/pretokenizer.h"
#include "runtime/model/sentencepiece_config.h"

namespace kvs {

class GgufFile;

class Tokenizer {
 public:
  static absl::StatusOr<Tokenizer> FromGguf(const GgufFile& gguf);
  static absl::StatusOr<Tokenizer> FromJsonFile(const std::string& path);

  Tokenizer(Tokenizer&& o) noexcept;
  Tokenizer& operator=(Tokenizer&&) = delete;

  // Encodes UTF-8 text (an error names the byte offset of invalid UTF-8). Special tokens written
  // in the text are recognised. `add_special_tokens` adds the model's BOS/template tokens as
  // the HF post-processor would (chat prompts pass false: the template already has them).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const;

  // Decodes ids to bytes (which may end mid-character) as a continuation of earlier text (a
  // SentencePiece "▁" is a space even on the first token); special tokens are skipped when asked.
  std::string DecodeBytes(const std::vector<int32_t>& ids, bool skip_special) const;
  // As HF's decode of the whole sequence: DecodeBytes with invalid UTF-8 replaced by U+FFFD, and
  // the space a SentencePiece tokenizer prepended dropped from the front.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special) const;

  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t TokenId(std::string_view token) const;  // -1 if absent
  const std::string& TokenString(int32_t id) const { return id_to_token_[id]; }
  bool IsSpecial(int32_t id) const { return special_ids_.contains(id); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }

 private:
  Tokenizer() = default;
  absl::Status Finish();
  void EncodePiece(const std::string& piece, bool at_start, std::vector<int32_t>& out) const;
  void AppendUnknown(const std::string& symbol, std::vector<int32_t>& out) const;
  void Bpe(const std::string& mapped, std::vector<int32_t>& out) const;

  std::vector<std::string> id_to_token_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  absl::flat_hash_map<std::string, int32_t> merge_rank_;  // "left right" -> rank
  std::vector<std::string> added_tokens_;                 // longest first
  absl::flat_hash_set<int32_t> special_ids_;
  PreTokenizer pre_;
  bool ignore_merges_ = false;  // whole piece in the vocabulary -> one token (Llama 3)
  std::optional<SentencePieceConfig> spm_;  // set for SentencePiece-style BPE
  std::vector<int32_t> byte_ids_;           // SentencePiece: the <0xXX> token of each byte, or -1
  absl::flat_hash_map<int32_t, uint8_t> byte_of_id_;  // and back
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  std::vector<int32_t> prefix_ids_;  // added by the post-processor when add_special_tokens
  std::vector<int32_t> suffix_ids_;
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

// Returns the byte offset of the first invalid UTF-8 sequence in `s`, or npos.
size_t FindInvalidUtf8(std::string_view s);
// `s` with every invalid UTF-8 sequence replaced by U+FFFD (as HF's decode does).
std::string ReplaceInvalidUtf8(std::string_view s);
// Number of bytes at the end of `s` that form an incomplete (but so far valid) UTF-8 sequence.
size_t IncompleteUtf8Suffix(std::string_view s);

}  // namespace kvs
