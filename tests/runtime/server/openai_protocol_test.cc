// The OpenAI body rules, one by one: what is accepted, what each bad field's error says, and the
// shapes of the JSON the server sends (which the openai client parses in serve_e2e_test).
#include "runtime/server/openai_protocol.h"

#include "gtest/gtest.h"

namespace kvs {
namespace {

TEST(OpenAiProtocolTest, ParsesCompletionAndChatBodies) {
  auto c = ParseApiRequest(R"({"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
                              "top_k": -1, "n": 2, "seed": 3, "stop": ["\n", "END"], "stream": true, "user": "u"})",
                           false, 16);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompt, "hi");
  EXPECT_EQ(c->params.max_tokens, 7);
  EXPECT_EQ(c->params.top_k, 0);  // -1 means off, as in vLLM
  EXPECT_EQ(c->params.n, 2);
  EXPECT_EQ(c->params.stop.size(), 2u);
  EXPECT_TRUE(c->stream);
  auto ids = ParseApiRequest(R"({"prompt": [1, 2, 3]})", false, 16);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ids->params.max_tokens, 16) << "the server's default";
  auto chat = ParseApiRequest(R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]})",
                              true, 16);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->messages.size(), 2u);
}

TEST(OpenAiProtocolTest, EveryBadFieldIsNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"[1, 2]", "JSON object"},
      {R"({"prompt": "a", "max_tokens": -3})", "max_tokens must be >= 1, got -3"},
      {R"({"prompt": "a", "max_tokens": 1.5})", "'max_tokens' must be an integer"},
      {R"({"prompt": "a", "n": 0})", "n must be in 1..128"},
      {R"({"prompt": "a", "seed": -1})", "'seed'"},
      {R"({"prompt": "a", "stop": 5})", "'stop'"},
      {R"({"prompt": "a", "stream": "yes"})", "'stream'"},
      {R"({"prompt": "a", "best_of": 3})", "'best_of' is not supported"},
      {R"({"prompt": "a", "frobnicate": 1})", "unknown field 'frobnicate'"},
      {R"({"max_tokens": 3})", "'prompt' is required"},
      {R"({"prompt": [1, "a"]})", "token ids"},
      {R"({"prompt": "a", "logprobs": 21})", "'logprobs' must be an integer in 0..20"},
      {R"({"prompt": "a", "logprobs": true})", "'logprobs' must be an integer"},
  };
  for (const auto& [body, want] : cases) {
    auto r = ParseApiRequest(body, false, 16);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << body << " -> " << r.status();
  }
  EXPECT_NE(ParseApiRequest(R"({"prompt": "a"})", true, 16).status().message().find("unknown field 'prompt'"),
            std::string::npos) << "chat bodies take messages";
  const std::string msgs = R"("messages": [{"role": "user", "content": "u"}])";
  EXPECT_NE(ParseApiRequest("{" + msgs + R"(, "top_logprobs": 2})", true, 16).status().message().find("needs 'logprobs': true"),
            std::string::npos);
  EXPECT_NE(ParseApiRequest("{" + msgs + R"(, "logprobs": 2})", true, 16).status().message().find("must be a boolean"),
            std::string::npos);
}

// Completions ask with "logprobs": k, chat with "logprobs": true and "top_logprobs": k; both
// answer in their own OpenAI shape.
TEST(OpenAiProtocolTest, LogprobsAreParsedAndAnsweredInEachApisShape) {
  auto c = ParseApiRequest(R"({"prompt": "a", "logprobs": 2})", false, 16);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->params.logprobs, 2);
  EXPECT_EQ(ParseApiRequest(R"({"prompt": "a"})", false, 16)->params.logprobs, -1);
  const std::string msgs = R"("messages": [{"role": "user", "content": "u"}])";
  EXPECT_EQ(ParseApiRequest("{" + msgs + R"(, "logprobs": true})", true, 16)->params.logprobs, 0);
  EXPECT_EQ(ParseApiRequest("{" + msgs + R"(, "logprobs": true, "top_logprobs": 3})", true, 16)->params.logprobs, 3);
  EXPECT_EQ(ParseApiRequest("{" + msgs + R"(, "logprobs": false})", true, 16)->params.logprobs, -1);

  const std::vector<ApiLogprob> lps = {{"Hel", -0.25f, {{"Hel", -0.25f}, {"Hi", -2.0f}}}, {"lo", -0.5f, {{"lo", -0.5f}, {"p", -1.5f}}}};
  const auto comp = CompletionResponse(*c, "id", 1, {{"Hello", FinishReason::kLength, lps}}, 3, 2);
  const auto& l = comp["choices"][0]["logprobs"];
  EXPECT_EQ(l["tokens"], nlohmann::json({"Hel", "lo"}));
  EXPECT_EQ(l["token_logprobs"][1], -0.5f);
  EXPECT_EQ(l["top_logprobs"][0]["Hi"], -2.0f);
  EXPECT_EQ(l["text_offset"], nlohmann::json({0, 3}));
  auto chat = ParseApiRequest("{" + msgs + R"(, "logprobs": true, "top_logprobs": 2})", true, 16);
  const auto cr = CompletionResponse(*chat, "id", 1, {{"Hello", FinishReason::kLength, lps}}, 3, 2);
  const auto& content = cr["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "Hel");
  EXPECT_EQ(content[0]["bytes"], nlohmann::json({72, 101, 108}));
  EXPECT_EQ(content[1]["top_logprobs"][1]["token"], "p");
  EXPECT_TRUE(CompletionResponse(*ParseApiRequest(R"({"prompt": "a"})", false, 16), "id", 1, {{"x", FinishReason::kStop}}, 1, 1)
                  ["choices"][0]["logprobs"].is_null());
  const auto chunk = StreamChunk(*c, "id", 1, 0, "lo", FinishReason::kNone, false, {lps[1]}, 3);
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["text_offset"], nlohmann::json({3}));
}

TEST(OpenAiProtocolTest, ResponsesHaveOpenAisShapes) {
  ApiRequest chat;
  chat.chat = true;
  chat.model = "m";
  auto full = CompletionResponse(chat, "id1", 5, {{"Paris.", FinishReason::kStop}}, 10, 2);
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "Paris.");
  EXPECT_EQ(full["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(full["usage"]["total_tokens"], 12);
  auto first = StreamChunk(chat, "id1", 5, 0, "Pa", FinishReason::kNone, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  ApiRequest comp;
  comp.model = "m";
  auto last = StreamChunk(comp, "id2", 5, 1, "", FinishReason::kLength, false);
  EXPECT_EQ(last["object"], "text_completion");
  EXPECT_EQ(last["choices"][0]["index"], 1);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const auto err = nlohmann::json::parse(ErrorBody("bad \xff", "invalid_request_error", "prompt"));
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  EXPECT_EQ(err["error"]["param"], "prompt");
}

TEST(OpenAiProtocolTest, MessageContentMayBeTextPartsOrNullForAnAssistant) {
  auto r = ParseApiRequest(R"({"messages": [
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null}, {"role": "tool", "content": "42", "tool_call_id": "c"}]})",
                           true, 16);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_EQ(r->messages[0].content, "a\nb");  // parts joined by newlines, as vLLM does
  EXPECT_EQ(r->messages[1].content, "");
  EXPECT_EQ(r->messages[2].role, "tool");
  auto image = ParseApiRequest(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", true, 16);
  ASSERT_FALSE(image.ok());
  EXPECT_NE(image.status().message().find("messages[0].content[0] is of type 'image_url'"), std::string::npos);
  auto null_user = ParseApiRequest(R"({"messages": [{"role": "user", "content": null}]})", true, 16);
  ASSERT_FALSE(null_user.ok());
  EXPECT_NE(null_user.status().message().find("messages[0].content is required"), std::string::npos);
  auto bad_part = ParseApiRequest(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})", true, 16);
  EXPECT_FALSE(bad_part.ok());
}

TEST(OpenAiProtocolTest, StreamOptionsIncludeUsageOnlyWithStream) {
  auto r = ParseApiRequest(R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": true}})", false, 16);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->include_usage);
  auto no_stream = ParseApiRequest(R"({"prompt": "x", "stream_options": {"include_usage": true}})", false, 16);
  ASSERT_FALSE(no_stream.ok());
  EXPECT_NE(no_stream.status().message().find("only allowed with 'stream': true"), std::string::npos);
  EXPECT_FALSE(ParseApiRequest(R"({"prompt": "x", "stream": true, "stream_options": {"x": 1}})", false, 16).ok());
  const auto usage = UsageChunk(*r, "cmpl-1", 5, 3, 4);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

}  // namespace
}  // namespace kvs
