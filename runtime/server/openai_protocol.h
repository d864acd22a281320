// The OpenAI-compatible request and response bodies (/v1/completions, /v1/chat/completions):
// parsing with validation that names the offending field, and the JSON kvshard answers with.
// Pure functions on JSON: no HTTP, no engine, so every rule is unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/model/chat_template.h"
#include "runtime/sched/request.h"

namespace kvs {

struct ApiRequest {
  bool chat = false;
  std::string model;
  std::string prompt;                 // completions
  std::vector<int32_t> prompt_ids;    // completions given token ids (OpenAI allows a list of ints)
  std::vector<ChatMessage> messages;  // chat
  SamplingParams params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the token counts
};

// Parses and validates a body; `default_max_tokens` applies when the body has none.
absl::StatusOr<ApiRequest> ParseApiRequest(const std::string& body, bool chat, int32_t default_max_tokens);

// One sampled token's log-probability with its text (raw bytes; the JSON writer replaces
// invalid UTF-8) and the most likely alternatives.
struct ApiLogprob {
  std::string token;
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;
};

// One sample's final state, for the non-streaming response.
struct ApiChoice {
  std::string text;
  FinishReason reason = FinishReason::kNone;
  std::vector<ApiLogprob> logprobs;
};

// The "logprobs" object of a choice in OpenAI's format (completions: tokens / token_logprobs /
// top_logprobs / text_offset from `text_offset`; chat: content[{token, logprob, bytes,
// top_logprobs}]), or null when the request asked for none.
nlohmann::json LogprobsJson(const ApiRequest& r, const std::vector<ApiLogprob>& lps, int64_t text_offset);

nlohmann::json CompletionResponse(const ApiRequest& r, const std::string& id, int64_t created,
                                  const std::vector<ApiChoice>& choices, int32_t prompt_tokens, int32_t output_tokens);
// One server-sent event's JSON for a streamed delta (text and/or a finish reason).
nlohmann::json StreamChunk(const ApiRequest& r, const std::string& id, int64_t created, int32_t index,
                           const std::string& delta, FinishReason reason, bool first,
                           const std::vector<ApiLogprob>& logprobs = {}, int64_t text_offset = 0);
// The last chunk of a stream that asked for usage: empty choices and the token counts.
nlohmann::json UsageChunk(const ApiRequest& r, const std::string& id, int64_t created, int32_t prompt_tokens,
                          int32_t output_tokens);
// {"error": {"message", "type", "param", "code"}} as OpenAI sends it.
std::string ErrorBody(const std::string& message, const std::string& type, const std::string& param = "");

}  // namespace kvs
