#include "runtime/model/chat_template.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace kvs {

absl::StatusOr<ChatTemplate> ChatTemplate::FromTemplateText(const std::string& t) {
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
      "chat template: not a ChatML or Llama 3 template; kvshard renders only those two families");
}

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
