// Chat prompt formats. kvshard renders the two families it serves natively instead of running
// a Jinja interpreter; which one applies is read from the model's template text (GGUF
// tokenizer.chat_template or tokenizer_config.json), and tests compare the rendering with HF
// transformers' apply_chat_template on the real templates.
//   ChatML  (SmolLM2, Qwen2): <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
//           A default system message written in the template is inserted when none is given.
//   Llama 3: <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvs {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  enum class Kind { kChatML, kLlama3 };

  // Recognises the template family; Unimplemented for any other template.
  static absl::StatusOr<ChatTemplate> FromTemplateText(const std::string& jinja);
  static ChatTemplate ChatML(std::string default_system = "") { return ChatTemplate(Kind::kChatML, std::move(default_system)); }
  static ChatTemplate Llama3() { return ChatTemplate(Kind::kLlama3, ""); }

  // Renders a conversation; with `add_generation_prompt` it ends where the assistant speaks.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  Kind kind() const { return kind_; }
  // The token that ends an assistant turn ("<|im_end|>" or "<|eot_id|>"): generation stops there.
  std::string EndOfTurn() const { return kind_ == Kind::kChatML ? "<|im_end|>" : "<|eot_id|>"; }

 private:
  ChatTemplate(Kind k, std::string default_system) : kind_(k), default_system_(std::move(default_system)) {}
  Kind kind_;
  std::string default_system_;
};

}  // namespace kvs
