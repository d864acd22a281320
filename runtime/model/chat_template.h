// Chat prompt formats. kvshard renders the two families it serves natively instead of running
// a Jinja interpreter; which one applies is read from the model's template text (GGUF
// tokenizer.chat_template or tokenizer_config.json), and tests compare the rendering with HF
// transformers' apply_chat_template on the real templates.
//   ChatML  (SmolLM2, Qwen2): <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
//           A default system message written in the template is inserted when none is given.
//   Llama 3: <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
//   Llama 2: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user|strip} [/INST] {assistant|strip} </s><s>[INST] ...
//   Gemma 3: <bos><start_of_turn>user\n{system}\n\n{user|trim}<end_of_turn>\n<start_of_turn>model\n...
//   (both: user and assistant turns must alternate, as their templates raise otherwise)
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvs {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", or "tool" where the template renders it
  std::string content;
};

class ChatTemplate {
 public:
  enum class Kind { kChatML, kLlama3, kLlama2, kGemma };

  // Recognises the template family; Unimplemented for any other template.
  static absl::StatusOr<ChatTemplate> FromTemplateText(const std::string& jinja);
  // `any_role`: the template writes every message's role as it is (SmolLM2's ChatML, Llama 3),
  // so a "tool" message renders like any other; templates with their own tool branch (Qwen2.5)
  // are not, and tool messages are refused for them by name.
  static ChatTemplate ChatML(std::string default_system = "", bool any_role = true) {
    return ChatTemplate(Kind::kChatML, std::move(default_system), any_role);
  }
  static ChatTemplate Llama3(bool any_role = true) { return ChatTemplate(Kind::kLlama3, "", any_role); }
  static ChatTemplate Llama2() { return ChatTemplate(Kind::kLlama2, "", false); }
  static ChatTemplate Gemma() { return ChatTemplate(Kind::kGemma, "", false); }

  // Renders a conversation; with `add_generation_prompt` it ends where the assistant speaks.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  Kind kind() const { return kind_; }
  // The family's name as `inspect` prints it.
  const char* Name() const;
  // The token that ends an assistant turn: generation stops there.
  std::string EndOfTurn() const;

 private:
  ChatTemplate(Kind k, std::string default_system, bool any_role)
      : kind_(k), default_system_(std::move(default_system)), any_role_(any_role) {}
  Kind kind_;
  std::string default_system_;
  bool any_role_;
};

}  // namespace kvs
