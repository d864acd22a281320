#include "runtime/model/sentencepiece_config.h"

#include <string>

#include "absl/strings/str_format.h"

namespace kvs {
namespace {

const std::string kMeta(kSentencePieceSpace);

absl::Status Unsupported(const std::string& what, const nlohmann::json& j) {
  return absl::UnimplementedError(absl::StrFormat("SentencePiece-style tokenizer: %s is not supported (%s)", what, j.dump()));
}

std::string Type(const nlohmann::json& j) { return j.is_object() ? j.value("type", "") : ""; }

// A Replace step of `from` by `to` with a plain-string pattern.
bool IsReplace(const nlohmann::json& j, const std::string& from, const std::string& to) {
  if (Type(j) != "Replace" || !j.contains("pattern") || !j["pattern"].is_object()) return false;
  const auto& p = j["pattern"];
  return p.contains("String") && p["String"] == from && j.value("content", "") == to;
}

absl::StatusOr<SentencePieceConfig::Prepend> PrependScheme(const nlohmann::json& j) {
  const std::string s = j.value("prepend_scheme", j.value("add_prefix_space", true) ? "always" : "never");
  if (s == "always") return SentencePieceConfig::Prepend::kAlways;
  if (s == "first") return SentencePieceConfig::Prepend::kFirst;
  if (s == "never") return SentencePieceConfig::Prepend::kNever;
  return Unsupported("Metaspace prepend_scheme '" + s + "'", j);
}

absl::Status CheckMetaspace(const nlohmann::json& j) {
  if (j.value("replacement", "") != kMeta) return Unsupported("a Metaspace replacement other than U+2581", j);
  if (j.value("split", true)) return Unsupported("Metaspace with split true", j);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<SentencePieceConfig>> SentencePieceConfigFromJson(const nlohmann::json& root) {
  const auto model = root.value("model", nlohmann::json::object());
  const auto normalizer = root.value("normalizer", nlohmann::json());
  const auto pre = root.value("pre_tokenizer", nlohmann::json());
  const auto decoder = root.value("decoder", nlohmann::json());
  const bool metaspace = Type(pre) == "Metaspace";
  const bool legacy = !normalizer.is_null();
  if (!metaspace && !legacy && !model.value("byte_fallback", false)) return std::nullopt;  // byte-level BPE

  SentencePieceConfig c;
  c.byte_fallback = model.value("byte_fallback", false);
  c.fuse_unk = model.value("fuse_unk", false);
  if (legacy) {
    // Sequence[Prepend("▁"), Replace(" ", "▁")], the Llama 2 layout.
    const auto steps = Type(normalizer) == "Sequence" ? normalizer.value("normalizers", nlohmann::json::array())
                                                      : nlohmann::json::array({normalizer});
    bool prepend = false, replace = false;
    for (const auto& s : steps) {
      if (Type(s) == "Prepend" && s.value("prepend", "") == kMeta) {
        prepend = true;
      } else if (IsReplace(s, " ", kMeta)) {
        replace = true;
      } else {
        return Unsupported("normalizer step '" + Type(s) + "'", s);
      }
    }
    if (!replace) return Unsupported("a normalizer that does not replace spaces by U+2581", normalizer);
    if (!pre.is_null()) return Unsupported("a pre-tokenizer beside the Prepend/Replace normalizer", pre);
    c.prepend = prepend ? SentencePieceConfig::Prepend::kAlways : SentencePieceConfig::Prepend::kNever;
  } else if (metaspace) {
    if (auto st = CheckMetaspace(pre); !st.ok()) return st;
    auto scheme = PrependScheme(pre);
    if (!scheme.ok()) return scheme.status();
    c.prepend = *scheme;
    c.prepend_if_missing_only = true;
  } else {
    return Unsupported("a byte-fallback BPE without the U+2581 whitespace scheme", pre);
  }

  // Decoder: the steps that undo the above; which one strips the leading space is noted.
  const auto steps = Type(decoder) == "Sequence" ? decoder.value("decoders", nlohmann::json::array())
                                                 : nlohmann::json::array({decoder});
  c.strip_leading_space = false;
  for (const auto& s : steps) {
    const std::string t = Type(s);
    if (t == "ByteFallback" || t == "Fuse" || IsReplace(s, kMeta, " ")) continue;
    if (t == "Strip" && s.value("content", "") == " " && s.value("start", 0) == 1 && s.value("stop", 0) == 0) {
      c.strip_leading_space = true;
    } else if (t == "Metaspace") {
      if (auto st = CheckMetaspace(s); !st.ok()) return st;
      auto scheme = PrependScheme(s);
      if (!scheme.ok()) return scheme.status();
      c.strip_leading_space = *scheme != SentencePieceConfig::Prepend::kNever;
    } else {
      return Unsupported("decoder step '" + t + "'", s);
    }
  }
  return c;
}

}  // namespace kvs
