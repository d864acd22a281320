#include "runtime/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <queue>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model/gguf_file.h"

namespace kvs {
namespace {

constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
constexpr size_t kCacheLimit = 1 << 16;
constexpr size_t kCachedPieceBytes = 256;

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in order.
struct ByteMap {
  std::array<std::string, 256> byte_to_char;
  absl::flat_hash_map<std::string, uint8_t> char_to_byte;
  ByteMap() {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : 256 + next++;
      AppendUtf8(cp, byte_to_char[b]);
      char_to_byte[byte_to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& Bytes() {
  static const ByteMap* m = new ByteMap();
  return *m;
}

size_t Utf8Len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 0;
}

std::vector<std::string> SplitChars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = std::max<size_t>(1, Utf8Len(static_cast<unsigned char>(s[i])));
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// The merges of a SentencePiece vocabulary that stores scores, as transformers' GGUF converter
// builds them (GGUFTokenizerSkeleton): every split of every token into two tokens, a token's
// splits ordered by the two halves' scores (highest first), all ordered by the whole token's
// score (highest first); both sorts stable. Splits fall on UTF-8 character boundaries.
absl::flat_hash_map<std::string, int32_t> SentencePieceMerges(const std::vector<std::string>& tokens,
                                                              const std::vector<double>& scores) {
  absl::flat_hash_map<std::string, double> score;
  for (size_t i = 0; i < tokens.size(); ++i) score[tokens[i]] = scores[i];
  struct Merge {
    std::string left, right;
    double whole;
  };
  std::vector<Merge> merges;
  std::vector<Merge> local;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& tok = tokens[i];
    if (tok.empty() || score.at(tok) != scores[i]) continue;  // a repeated string counts once
    local.clear();
    for (size_t at = Utf8Len(static_cast<unsigned char>(tok[0])); at > 0 && at < tok.size();
         at += std::max<size_t>(1, Utf8Len(static_cast<unsigned char>(tok[at])))) {
      std::string l = tok.substr(0, at), r = tok.substr(at);
      if (score.contains(l) && score.contains(r)) local.push_back({std::move(l), std::move(r), scores[i]});
    }
    std::stable_sort(local.begin(), local.end(), [&](const Merge& a, const Merge& b) {
      const double al = score.at(a.left), bl = score.at(b.left);
      return al != bl ? al > bl : score.at(a.right) > score.at(b.right);
    });
    for (Merge& m : local) merges.push_back(std::move(m));
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.whole > b.whole; });
  absl::flat_hash_map<std::string, int32_t> rank;
  rank.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) rank.emplace(merges[i].left + " " + merges[i].right, static_cast<int32_t>(i));
  return rank;
}

}  // namespace

size_t FindInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8Len(c);
    if (n == 0 || i + n > s.size()) return i;
    uint32_t cp = n == 1 ? c : (c & (0xFF >> (n + 1)));
    for (size_t k = 1; k < n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const bool overlong = (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n;
  }
  return std::string_view::npos;
}

size_t IncompleteUtf8Suffix(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking
    const size_t n = Utf8Len(c);
    return n > back ? back : 0;
  }
  return 0;
}

Tokenizer::Tokenizer(Tokenizer&& o) noexcept
    : id_to_token_(std::move(o.id_to_token_)),
      token_to_id_(std::move(o.token_to_id_)),
      merge_rank_(std::move(o.merge_rank_)),
      added_tokens_(std::move(o.added_tokens_)),
      special_ids_(std::move(o.special_ids_)),
      pre_(std::move(o.pre_)),
      ignore_merges_(o.ignore_merges_),
      spm_(o.spm_),
      byte_ids_(std::move(o.byte_ids_)),
      byte_of_id_(std::move(o.byte_of_id_)),
      unk_id_(o.unk_id_),
      bos_id_(o.bos_id_),
      eos_id_(o.eos_id_),
      prefix_ids_(std::move(o.prefix_ids_)),
      suffix_ids_(std::move(o.suffix_ids_)) {}

int32_t Tokenizer::TokenId(std::string_view token) const {
  auto it = token_to_id_.find(absl::string_view(token.data(), token.size()));
  return it == token_to_id_.end() ? -1 : it->second;
}

absl::Status Tokenizer::Finish() {
  token_to_id_.reserve(id_to_token_.size());
  for (size_t i = 0; i < id_to_token_.size(); ++i) token_to_id_.emplace(id_to_token_[i], static_cast<int32_t>(i));
  if (spm_) {
    byte_ids_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      byte_ids_[b] = TokenId(absl::StrFormat("<0x%02X>", b));
      if (byte_ids_[b] >= 0) byte_of_id_[byte_ids_[b]] = static_cast<uint8_t>(b);
    }
  }
  std::sort(added_tokens_.begin(), added_tokens_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return absl::OkStatus();
}

absl::StatusOr<Tokenizer> Tokenizer::FromGguf(const GgufFile& f) {
  Tokenizer t;
  KVS_ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model != "gpt2" && model != "llama") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: tokenizer model '%s' is not supported (byte-level BPE 'gpt2' and SentencePiece 'llama')", f.path(), model));
  }
  KVS_ASSIGN_OR_RETURN(const std::vector<std::string>* tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  t.id_to_token_ = *tokens;
  if (model == "llama") {
    // SentencePiece vocabulary: scores instead of merges. The merges are derived as transformers'
    // GGUF converter derives them (so ids equal what HF users get from the same file), and the
    // whitespace scheme is llama.cpp's: "▁" for spaces, one before each piece of text when
    // add_space_prefix (the default), bytes outside the vocabulary as <0xXX> tokens.
    KVS_ASSIGN_OR_RETURN(const std::vector<double>* scores, f.GetFloatArray("tokenizer.ggml.scores"));
    if (scores->size() != tokens->size()) {
      return absl::DataLossError(absl::StrFormat("%s: %d token scores for %d tokens", f.path(), scores->size(), tokens->size()));
    }
    t.merge_rank_ = SentencePieceMerges(*tokens, *scores);
    SentencePieceConfig c;
    const bool space_prefix = !f.Has("tokenizer.ggml.add_space_prefix") ||
                              f.GetBool("tokenizer.ggml.add_space_prefix").value_or(true);
    c.prepend = space_prefix ? SentencePieceConfig::Prepend::kAlways : SentencePieceConfig::Prepend::kNever;
    c.strip_leading_space = space_prefix;
    c.byte_fallback = true;
    c.fuse_unk = true;
    t.spm_ = c;
  } else {
    KVS_ASSIGN_OR_RETURN(const std::vector<std::string>* merges, f.GetStringArray("tokenizer.ggml.merges"));
    for (size_t i = 0; i < merges->size(); ++i) t.merge_rank_.emplace((*merges)[i], static_cast<int32_t>(i));
  }
  if (f.Has("tokenizer.ggml.token_type")) {
    KVS_ASSIGN_OR_RETURN(const std::vector<int64_t>* types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types->size() != tokens->size()) {
      return absl::DataLossError(absl::StrFormat("%s: %d token types for %d tokens", f.path(), types->size(), tokens->size()));
    }
    for (size_t i = 0; i < types->size(); ++i) {
      // 3 = control (special), 4 = user-defined (added, not special).
      if ((*types)[i] == 3 || (*types)[i] == 4) t.added_tokens_.push_back((*tokens)[i]);
      if ((*types)[i] == 3) t.special_ids_.insert(static_cast<int32_t>(i));
    }
  }
  if (!t.spm_) {
    const std::string pre = f.Has("tokenizer.ggml.pre") ? f.GetString("tokenizer.ggml.pre").value_or("default") : "default";
    KVS_ASSIGN_OR_RETURN(t.pre_, PreTokenizer::FromGgufName(pre));
    t.ignore_merges_ = pre == "llama-bpe" || pre == "llama3";
  }
  auto id_field = [&](const char* key) -> int32_t {
    if (!f.Has(key)) return -1;
    auto v = f.GetUint(key);
    return v.ok() && *v < tokens->size() ? static_cast<int32_t>(*v) : -1;
  };
  t.bos_id_ = id_field("tokenizer.ggml.bos_token_id");
  t.eos_id_ = id_field("tokenizer.ggml.eos_token_id");
  t.unk_id_ = id_field("tokenizer.ggml.unknown_token_id");
  const bool add_bos = f.Has("tokenizer.ggml.add_bos_token") && f.GetBool("tokenizer.ggml.add_bos_token").value_or(false);
  if (add_bos && t.bos_id_ >= 0) t.prefix_ids_.push_back(t.bos_id_);
  KVS_RETURN_IF_ERROR(t.Finish());
  return t;
}

absl::StatusOr<Tokenizer> Tokenizer::FromJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s: cannot open tokenizer", path));
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(path + ": not valid JSON");
  auto bad = [&](const std::string& msg) { return absl::InvalidArgumentError(path + ": " + msg); };
  const auto& model = j.value("model", nlohmann::json::object());
  if (model.value("type", "") != "BPE") return absl::UnimplementedError(path + ": only BPE tokenizer models are supported");
  Tokenizer t;
  auto spm = SentencePieceConfigFromJson(j);
  if (!spm.ok()) return absl::UnimplementedError(path + ": " + std::string(spm.status().message()));
  t.spm_ = *spm;
  if (!t.spm_) {
    if (!j.value("normalizer", nlohmann::json()).is_null()) {
      return absl::UnimplementedError(path + ": tokenizer normalizers are not supported (normalizer must be null)");
    }
    const auto& dec = j.value("decoder", nlohmann::json());
    if (!dec.is_null() && dec.value("type", "") != "ByteLevel") {
      return absl::UnimplementedError(path + ": only the ByteLevel decoder is supported");
    }
  }
  const auto& vocab = model.value("vocab", nlohmann::json::object());
  if (!vocab.is_object() || vocab.empty()) return bad("model.vocab must be a non-empty object");
  int64_t max_id = -1;
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) return bad("vocab ids must be small non-negative integers");
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  const auto& added = j.value("added_tokens", nlohmann::json::array());
  for (const auto& a : added) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") || !a["content"].is_string()) {
      return bad("added_tokens entries need an integer id and a string content");
    }
    max_id = std::max<int64_t>(max_id, a["id"].get<int64_t>());
  }
  t.id_to_token_.assign(max_id + 1, "");
  for (const auto& [tok, id] : vocab.items()) t.id_to_token_[id.get<int64_t>()] = tok;
  for (const auto& a : added) {
    const std::string content = a["content"].get<std::string>();
    t.id_to_token_[a["id"].get<int64_t>()] = content;
    t.added_tokens_.push_back(content);
    if (a.value("special", false)) t.special_ids_.insert(a["id"].get<int32_t>());
  }
  const auto& merges = model.value("merges", nlohmann::json::array());
  for (size_t i = 0; i < merges.size(); ++i) {
    std::string key;
    if (merges[i].is_string()) key = merges[i].get<std::string>();
    else if (merges[i].is_array() && merges[i].size() == 2 && merges[i][0].is_string() && merges[i][1].is_string())
      key = merges[i][0].get<std::string>() + " " + merges[i][1].get<std::string>();
    else return bad(absl::StrFormat("merge #%d must be \"a b\" or [\"a\", \"b\"]", i));
    t.merge_rank_.emplace(std::move(key), static_cast<int32_t>(i));
  }
  t.ignore_merges_ = model.value("ignore_merges", false);
  // A SentencePiece-style file's pre-tokenizer (Metaspace) is its whitespace scheme, read above.
  if (!t.spm_) {
    KVS_ASSIGN_OR_RETURN(t.pre_, PreTokenizer::FromJson(j.value("pre_tokenizer", nlohmann::json())));
  }
  KVS_RETURN_IF_ERROR(t.Finish());
  if (auto unk = model.find("unk_token"); unk != model.end() && unk->is_string()) t.unk_id_ = t.TokenId(unk->get<std::string>());

  // Post-processor: TemplateProcessing's "single" tells which special tokens wrap a sequence.
  std::function<absl::Status(const nlohmann::json&)> post = [&](const nlohmann::json& p) -> absl::Status {
    if (p.is_null()) return absl::OkStatus();
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const auto& sub : p.value("processors", nlohmann::json::array())) KVS_RETURN_IF_ERROR(post(sub));
    } else if (type == "TemplateProcessing") {
      bool seen_sequence = false;
      for (const auto& item : p.value("single", nlohmann::json::array())) {
        if (item.contains("Sequence")) { seen_sequence = true; continue; }
        if (!item.contains("SpecialToken")) continue;
        const int32_t id = t.TokenId(item["SpecialToken"].value("id", ""));
        if (id < 0) return bad("post_processor names an unknown special token");
        (seen_sequence ? t.suffix_ids_ : t.prefix_ids_).push_back(id);
      }
    } else if (type != "ByteLevel") {
      return absl::UnimplementedError(absl::StrFormat("%s: post-processor '%s' is not supported", path, type));
    }
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(post(j.value("post_processor", nlohmann::json())));
  if (!t.prefix_ids_.empty()) t.bos_id_ = t.prefix_ids_.front();
  return t;
}

void Tokenizer::Bpe(const std::string& mapped, std::vector<int32_t>& out) const {
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = cache_.find(mapped);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  if (auto whole = token_to_id_.find(mapped); ignore_merges_ && whole != token_to_id_.end()) {
    ids.push_back(whole->second);
  } else {
    // Merges by a heap of candidate pairs over a linked list of symbols: O(n log n) in the piece's
    // length (a scan for the best pair after every merge is quadratic, and one piece can be a
    // whole 500 KB body of letters). Pops the lowest rank, leftmost on ties, exactly as a rescan
    // would; an entry is stale once either symbol of its pair has grown.
    struct Sym {
      uint32_t start, len;  // bytes of `mapped`; len 0: merged into its left neighbour
      int32_t prev, next;
    };
    struct Cand {
      int32_t rank;
      int32_t left;  // symbol index (order of starts = order in the text)
      uint32_t left_len, right_len;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::vector<Sym> sym;
    for (size_t i = 0; i < mapped.size();) {
      const auto n = static_cast<uint32_t>(std::max<size_t>(1, Utf8Len(static_cast<unsigned char>(mapped[i]))));
      const auto idx = static_cast<int32_t>(sym.size());
      sym.push_back({static_cast<uint32_t>(i), std::min<uint32_t>(n, static_cast<uint32_t>(mapped.size() - i)), idx - 1, idx + 1});
      i += n;
    }
    if (!sym.empty()) sym.back().next = -1;
    std::string key;
    auto rank_of = [&](int32_t a, int32_t b) {
      key.assign(mapped, sym[a].start, sym[a].len).append(" ").append(mapped, sym[b].start, sym[b].len);
      auto r = merge_rank_.find(key);
      return r == merge_rank_.end() ? kNoRank : r->second;
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int32_t a) {
      if (a < 0 || sym[a].next < 0) return;
      const int32_t b = sym[a].next;
      if (const int32_t r = rank_of(a, b); r != kNoRank) heap.push({r, a, sym[a].len, sym[b].len});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) consider(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      Sym& l = sym[c.left];
      if (l.len != c.left_len || l.next < 0 || sym[l.next].len != c.right_len) continue;
      Sym& r = sym[l.next];
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (l.next >= 0) sym[l.next].prev = c.left;
      consider(l.prev);
      consider(c.left);
    }
    for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
      key.assign(mapped, sym[i].start, sym[i].len);
      auto it = token_to_id_.find(key);
      if (it != token_to_id_.end()) ids.push_back(it->second);
      else AppendUnknown(key, ids);
    }
  }
  out.insert(out.end(), ids.begin(), ids.end());
  absl::MutexLock lock(&cache_mu_);
  // Only word-sized pieces are kept: a cache of whole hostile bodies would grow without bound.
  if (cache_.size() < kCacheLimit && mapped.size() <= kCachedPieceBytes) cache_.emplace(mapped, std::move(ids));
}

// A symbol outside the vocabulary: its bytes' <0xXX> tokens (SentencePiece byte fallback), else
// <unk> (one for a run of them where the file fuses unknowns).
void Tokenizer::AppendUnknown(const std::string& symbol, std::vector<int32_t>& out) const {
  if (spm_ && spm_->byte_fallback) {
    bool all = true;
    for (unsigned char c : symbol) all = all && byte_ids_[c] >= 0;
    if (all) {
      for (unsigned char c : symbol) out.push_back(byte_ids_[c]);
      return;
    }
  }
  if (unk_id_ < 0) return;
  if (spm_ && spm_->fuse_unk && !out.empty() && out.back() == unk_id_) return;
  out.push_back(unk_id_);
}

void Tokenizer::EncodePiece(const std::string& text, bool at_start, std::vector<int32_t>& out) const {
  if (spm_) {
    // Spaces become "▁", and a "▁" goes in front as the file's scheme says (Metaspace only where
    // the piece lacks one; its "first" scheme only for the piece at the text's start). The piece
    // is not split further.
    const std::string_view kMeta = kSentencePieceSpace;
    std::string norm;
    norm.reserve(text.size() + 8);
    for (char c : text) {
      if (c == ' ') norm += kMeta;
      else norm.push_back(c);
    }
    const bool scheme = spm_->prepend == SentencePieceConfig::Prepend::kAlways ||
                        (spm_->prepend == SentencePieceConfig::Prepend::kFirst && at_start);
    if (scheme && !(spm_->prepend_if_missing_only && norm.compare(0, kMeta.size(), kMeta) == 0)) norm.insert(0, kMeta);
    Bpe(norm, out);
    return;
  }
  const ByteMap& bm = Bytes();
  for (const std::string& piece : pre_.Split(text)) {
    std::string mapped;
    for (unsigned char c : piece) mapped += bm.byte_to_char[c];
    Bpe(mapped, out);
  }
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  if (size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrFormat("text is not valid UTF-8 (byte offset %d)", bad));
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_ids_;
  // Each added token's next occurrence at or after `pos` is remembered and searched again only
  // once `pos` has passed it, so every token's search moves forward through the text once:
  // O(text x added tokens), where searching afresh at every cut was quadratic in the number of
  // special tokens written in the text (10,000 chat messages).
  std::vector<size_t> next_at(added_tokens_.size(), 0);
  std::vector<bool> searched(added_tokens_.size(), false);
  size_t pos = 0;
  while (pos < text.size()) {
    // The earliest added token; at equal starts the longest wins (the list is sorted so).
    size_t best_at = std::string_view::npos;
    const std::string* best = nullptr;
    for (size_t k = 0; k < added_tokens_.size(); ++k) {
      if (!searched[k] || (next_at[k] != std::string_view::npos && next_at[k] < pos)) {
        next_at[k] = text.find(added_tokens_[k], pos);
        searched[k] = true;
      }
      if (next_at[k] < best_at) {
        best_at = next_at[k];
        best = &added_tokens_[k];
      }
    }
    const size_t plain_end = best ? best_at : text.size();
    if (plain_end > pos) EncodePiece(std::string(text.substr(pos, plain_end - pos)), pos == 0, ids);
    if (best == nullptr) break;
    ids.push_back(token_to_id_.at(*best));
    pos = best_at + best->size();
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string Tokenizer::DecodeBytes(const std::vector<int32_t>& ids, bool skip_special) const {
  const ByteMap& bm = Bytes();
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (special_ids_.contains(id)) {
      if (!skip_special) out += id_to_token_[id];
      continue;
    }
    const std::string& tok = id_to_token_[id];
    if (spm_) {  // <0xXX> is its byte; "▁" is a space
      if (auto b = byte_of_id_.find(id); b != byte_of_id_.end()) {
        out.push_back(static_cast<char>(b->second));
        continue;
      }
      for (size_t i = 0; i < tok.size();) {
        if (tok.compare(i, kSentencePieceSpace.size(), kSentencePieceSpace) == 0) {
          out.push_back(' ');
          i += kSentencePieceSpace.size();
        } else {
          out.push_back(tok[i++]);
        }
      }
      continue;
    }
    for (const std::string& ch : SplitChars(tok)) {
      auto it = bm.char_to_byte.find(ch);
      if (it != bm.char_to_byte.end()) out.push_back(static_cast<char>(it->second));
      else out += ch;  // added tokens are stored as plain text
    }
  }
  return out;
}

std::string ReplaceInvalidUtf8(std::string_view rest) {
  std::string out;
  out.reserve(rest.size());
  while (!rest.empty()) {
    const size_t bad = FindInvalidUtf8(rest);
    if (bad == std::string_view::npos) {
      out += rest;
      break;
    }
    out += rest.substr(0, bad);
    out += "\xEF\xBF\xBD";  // U+FFFD
    rest.remove_prefix(bad + 1);
    while (!rest.empty() && (static_cast<unsigned char>(rest[0]) & 0xC0) == 0x80) rest.remove_prefix(1);
  }
  return out;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string raw = DecodeBytes(ids, skip_special);
  if (spm_ && spm_->strip_leading_space) {
    // The space the prepended "▁" became, where the first token shown begins with one.
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size() || (skip_special && special_ids_.contains(id))) continue;
      if (!special_ids_.contains(id) && id_to_token_[id].starts_with(kSentencePieceSpace) && !raw.empty() && raw[0] == ' ') {
        raw.erase(0, 1);
      }
      break;
    }
  }
  return ReplaceInvalidUtf8(raw);
}

}  // namespace kvs
