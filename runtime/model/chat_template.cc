#include "runtime/model/chat_template.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace kvs {

absl::StatusOr<ChatTemplate> ChatTemplate::FromTemplateText(const std::string& t) {
  if (absl::StrContains(t, "[INST]") && absl::StrContains(t, "<<SYS>>")) return Llama2();
  if (absl::StrContains(t, "<start_of_turn>") && absl::StrContains(t, "first_user_prefix")) return Gemma();
  if (absl::StrContains(t, "<start_of_turn>")) {
    return absl::UnimplementedError(
        "chat template: an older Gemma template (no system-message prefix) is not supported; Gemma 3's is");
  }
  if (absl::StrContains(t, "[INST]")) {
    return absl::UnimplementedError("chat template: an [INST] template without <<SYS>> (Mistral's) is not supported; Llama 2's is");
  }
  if (absl::StrContains(t, "<|start_header_id|>") && absl::StrContains(t, "<|eot_id|>")) {
    if (absl::StrContains(t, "Cutting Knowledge Date") || absl::StrContains(t, "tools")) {
      return absl::UnimplementedError(
          "chat template: the Llama 3.1 tool-calling template is not supported (Llama 3's is)");
    }
    return Llama3(/*any_role=*/!absl::StrContains(t, "tool"));
  }
  if (absl::StrContains(t, "<|im_start|>")) {
    // A default system message is written literally after "<|im_start|>system\n" in the branch
    // taken when the first message is not a system message (SmolLM2: "You are a helpful AI
    // assistant named SmolLM, ..."; Qwen2: "You are a helpful assistant.").
    std::string default_system;
    const std::string marker = "<|im_start|>system\n";
    const size_t at = t.find(marker);
    if (at != std::string::npos && absl::StrContains(t.substr(0, at), "!= 'system'")) {
      const size_t begin = at + marker.size();
      const size_t end = t.find("<|im_end|>", begin);
      if (end != std::string::npos) default_system = t.substr(begin, end - begin);
    }
    return ChatML(default_system, /*any_role=*/!absl::StrContains(t, "tool"));
  }
  return absl::UnimplementedError(
      "chat template: not a ChatML, Llama 3, Llama 2 or Gemma 3 template; kvshard renders only those families");
}

const char* ChatTemplate::Name() const {
  switch (kind_) {
    case Kind::kChatML: return "ChatML";
    case Kind::kLlama3: return "Llama 3";
    case Kind::kLlama2: return "Llama 2";
    case Kind::kGemma: return "Gemma 3";
  }
  return "";
}

std::string ChatTemplate::EndOfTurn() const {
  switch (kind_) {
    case Kind::kChatML: return "<|im_end|>";
    case Kind::kLlama3: return "<|eot_id|>";
    case Kind::kLlama2: return "</s>";
    case Kind::kGemma: return "<end_of_turn>";
  }
  return "";
}

namespace {

// Llama 2 and Gemma 3 take an optional leading system message, then user and assistant turns
// that alternate (their templates raise otherwise: so do we, by name).
absl::Status CheckAlternating(const std::vector<ChatMessage>& messages, const char* family) {
  const size_t first = !messages.empty() && messages[0].role == "system" ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    const bool want_user = (i - first) % 2 == 0;
    if (messages[i].role != (want_user ? "user" : "assistant")) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chat message %d has role '%s': the %s chat template needs an optional system message, then user and "
          "assistant turns alternating, starting with user",
          i, messages[i].role, family));
    }
  }
  return absl::OkStatus();
}

std::string Stripped(const std::string& s) { return std::string(absl::StripAsciiWhitespace(s)); }

}  // namespace

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  std::string out;
  for (const ChatMessage& m : messages) {
    if (m.role == "tool" && !any_role_) {
      return absl::InvalidArgumentError(
          "chat message role 'tool': this model's chat template formats tool results in its own way, which kvshard "
          "does not render");
    }
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chat message role '%s' is not one of system, user, assistant, tool", m.role));
    }
  }
  if (kind_ == Kind::kLlama2 || kind_ == Kind::kGemma) {
    const bool llama2 = kind_ == Kind::kLlama2;
    if (absl::Status st = CheckAlternating(messages, llama2 ? "Llama 2" : "Gemma 3"); !st.ok()) return st;
    const bool has_system = !messages.empty() && messages[0].role == "system";
    const std::string system = has_system ? messages[0].content : "";
    if (!llama2) out += "<bos>";
    for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
      const ChatMessage& m = messages[i];
      const bool first = i == (has_system ? 1u : 0u);
      if (llama2) {
        const std::string content = first && has_system ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + m.content : m.content;
        out += m.role == "user" ? "<s>[INST] " + Stripped(content) + " [/INST]" : " " + Stripped(content) + " </s>";
      } else {
        out += "<start_of_turn>" + std::string(m.role == "assistant" ? "model" : "user") + "\n" +
               (first && has_system ? system + "\n\n" : "") + Stripped(m.content) + "<end_of_turn>\n";
      }
    }
    if (!llama2 && add_generation_prompt) out += "<start_of_turn>model\n";
    return out;
  }
  if (kind_ == Kind::kChatML) {
    if (!default_system_.empty() && (messages.empty() || messages[0].role != "system")) {
      out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
    }
    for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
  } else {
    for (size_t i = 0; i < messages.size(); ++i) {
      if (i == 0) out += "<|begin_of_text|>";
      out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
             std::string(absl::StripAsciiWhitespace(messages[i].content)) + "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

}  // namespace kvs
