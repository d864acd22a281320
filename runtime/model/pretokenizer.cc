#include "runtime/model/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvs {

// One compiled pattern applied with "Isolated" behaviour.
class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Compile(std::string_view pattern) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &err_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      return absl::InvalidArgumentError(absl::StrFormat("pre-tokenizer regex /%s/ does not compile at %d: %s",
                                                        pattern, err_offset, reinterpret_cast<char*>(msg)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
    return std::unique_ptr<RegexSplitter>(new RegexSplitter(code));
  }
  ~RegexSplitter() { pcre2_code_free(code_); }

  void Split(std::string_view text, std::vector<std::string>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t pos = 0;
    size_t last = 0;
    while (pos <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t begin = ov[0];
      const size_t end = ov[1];
      if (end == begin) {  // empty match: step over one UTF-8 character
        pos = begin + 1;
        while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      if (begin > last) out.emplace_back(text.substr(last, begin - last));
      out.emplace_back(text.substr(begin, end - begin));
      last = pos = end;
    }
    if (last < text.size()) out.emplace_back(text.substr(last));
    pcre2_match_data_free(md);
  }

 private:
  explicit RegexSplitter(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

absl::Status PreTokenizer::AddSplit(std::string_view pattern) {
  KVS_ASSIGN_OR_RETURN(auto s, RegexSplitter::Compile(pattern));
  steps_.push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status PreTokenizer::AddDigits() { return AddSplit(R"(\p{N})"); }

std::vector<std::string> PreTokenizer::Split(std::string_view text) const {
  std::vector<std::string> pieces;
  if (text.empty()) return pieces;
  pieces.emplace_back(add_prefix_space_ && text[0] != ' ' ? " " + std::string(text) : std::string(text));
  for (const auto& step : steps_) {
    std::vector<std::string> next;
    for (const std::string& p : pieces) step->Split(p, next);
    pieces = std::move(next);
  }
  return pieces;
}

namespace {

absl::Status AddFromJson(PreTokenizer& pt, const nlohmann::json& j) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& sub : j.value("pretokenizers", nlohmann::json::array())) KVS_RETURN_IF_ERROR(AddFromJson(pt, sub));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    if (j.value("add_prefix_space", false)) pt.set_add_prefix_space(true);
    if (j.value("use_regex", true)) return pt.AddSplit(kGpt2Pattern);
    return absl::OkStatus();
  }
  if (type == "Digits") {
    if (!j.value("individual_digits", false)) {
      return absl::UnimplementedError("tokenizer.json: Digits pre-tokenizer without individual_digits is not supported");
    }
    return pt.AddDigits();
  }
  if (type == "Split") {
    const std::string behavior = j.value("behavior", "");
    if (behavior != "Isolated" || j.value("invert", false)) {
      return absl::UnimplementedError(absl::StrFormat(
          "tokenizer.json: Split pre-tokenizer with behavior '%s' is not supported (only Isolated)", behavior));
    }
    const auto& pat = j.value("pattern", nlohmann::json::object());
    if (pat.contains("Regex") && pat["Regex"].is_string()) return pt.AddSplit(pat["Regex"].get<std::string>());
    return absl::UnimplementedError("tokenizer.json: Split pre-tokenizer needs a Regex pattern");
  }
  return absl::UnimplementedError(absl::StrFormat("tokenizer.json: pre-tokenizer type '%s' is not supported", type));
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& j) {
  PreTokenizer pt;
  KVS_RETURN_IF_ERROR(AddFromJson(pt, j));
  return pt;
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromGgufName(const std::string& name) {
  PreTokenizer pt;
  if (name == "smollm") {  // Digits(individual) + ByteLevel, as SmolLM2's tokenizer.json
    KVS_RETURN_IF_ERROR(pt.AddDigits());
    KVS_RETURN_IF_ERROR(pt.AddSplit(kGpt2Pattern));
  } else if (name == "llama-bpe" || name == "llama3") {
    KVS_RETURN_IF_ERROR(pt.AddSplit(kLlama3Pattern));
  } else if (name == "qwen2") {
    KVS_RETURN_IF_ERROR(pt.AddSplit(kQwen2Pattern));
  } else if (name == "gpt2" || name == "default") {
    KVS_RETURN_IF_ERROR(pt.AddSplit(kGpt2Pattern));
  } else {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF pre-tokenizer '%s' is not supported (supported: smollm, llama-bpe, qwen2, gpt2, default)", name));
  }
  return pt;
}

}  // namespace kvs
