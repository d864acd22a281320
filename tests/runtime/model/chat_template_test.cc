// Chat rendering against transformers' apply_chat_template (Jinja) on SmolLM2's ChatML template
// and Llama 3's template.
#include "runtime/model/chat_template.h"

#include "gtest/gtest.h"
#include "runtime/model/gguf_file.h"
#include "tests/support/engine_harness.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

std::vector<ChatMessage> Messages(const nlohmann::json& j) {
  std::vector<ChatMessage> m;
  for (const auto& x : j) m.push_back({x["role"], x["content"]});
  return m;
}

TEST(ChatTemplateTest, Llama3RenderingMatchesJinja) {
  const auto g = testing::ReadJson(testing::GoldenPath("chat_templates.json"));
  auto t = ChatTemplate::FromTemplateText(g["llama3_template"]);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplate::Kind::kLlama3);
  for (const auto& c : g["cases"]) {
    auto text = t->Render(Messages(c["messages"]), true);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, c["llama3"].get<std::string>());
  }
}

TEST(ChatTemplateTest, SmolLm2ChatMlRenderingMatchesJinjaIncludingDefaultSystemMessage) {
  KVS_REQUIRE_SMOLLM2(path);
  auto gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok());
  auto text_or = (*gguf)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(text_or.ok());
  auto t = ChatTemplate::FromTemplateText(*text_or);
  ASSERT_TRUE(t.ok()) << t.status();
  const auto g = testing::ReadJson(testing::GoldenPath("chat_templates.json"));
  for (const auto& c : g["cases"]) {
    auto text = t->Render(Messages(c["messages"]), true);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, c["chatml_smollm2"].get<std::string>());
  }
}

// Llama 2's and Gemma 3's templates (the SentencePiece families) against the same Jinja
// rendering (tests/reference/make_spm_chat_goldens.py): system messages folded into the first
// user turn, stripped contents, alternating turns.
TEST(ChatTemplateTest, Llama2AndGemma3RenderingMatchesJinja) {
  const auto g = testing::ReadJson(testing::GoldenPath("chat_templates_spm.json"));
  for (const auto& [family, kind] : {std::pair{"llama2", ChatTemplate::Kind::kLlama2}, std::pair{"gemma3", ChatTemplate::Kind::kGemma}}) {
    auto t = ChatTemplate::FromTemplateText(g[std::string(family) + "_template"]);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->kind(), kind);
    for (const auto& c : g["cases"]) {
      auto text = t->Render(Messages(c["messages"]), true);
      ASSERT_TRUE(text.ok()) << text.status();
      EXPECT_EQ(*text, c[family].get<std::string>()) << family;
    }
    // Turns that do not alternate are refused by name, as the templates raise.
    auto bad = t->Render({{"user", "a"}, {"user", "b"}}, true);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("alternating"), std::string::npos) << bad.status();
    EXPECT_EQ(t->Render({{"user", "q"}, {"tool", "42"}}, true).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ChatTemplateTest, RejectsUnknownTemplatesAndRoles) {
  EXPECT_EQ(ChatTemplate::FromTemplateText("{{ messages }}").status().code(), absl::StatusCode::kUnimplemented);
  auto r = ChatTemplate::ChatML().Render({{"robot", "hi"}}, true);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("robot"), std::string::npos);
}

// A template that writes every role as it is renders a tool message like any other; one with its
// own tool branch (Qwen2.5-style) refuses tool messages by name rather than render them wrongly.
TEST(ChatTemplateTest, ToolMessagesRenderOnlyWhereTheTemplateWritesAnyRole) {
  auto generic = ChatTemplate::FromTemplateText("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                                                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}");
  ASSERT_TRUE(generic.ok()) << generic.status();
  auto text = generic->Render({{"user", "q"}, {"tool", "42"}}, /*add_generation_prompt=*/false);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<|im_start|>user\nq<|im_end|>\n<|im_start|>tool\n42<|im_end|>\n");
  auto own = ChatTemplate::FromTemplateText("{% for message in messages %}{% if message.role == \"tool\" %}<tool_response>"
                                            "{% endif %}<|im_start|>{% endfor %}");
  ASSERT_TRUE(own.ok()) << own.status();
  auto refused = own->Render({{"user", "q"}, {"tool", "42"}}, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("role 'tool'"), std::string::npos);
  EXPECT_FALSE(generic->Render({{"robot", "x"}}, false).ok());
}

}  // namespace
}  // namespace kvs
