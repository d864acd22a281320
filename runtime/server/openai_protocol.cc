#include "runtime/server/openai_protocol.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "runtime/engine/logprobs.h"

namespace kvs {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// One chat message: a string role and its content as OpenAI allows it: a string, an array of
// text parts (joined by newlines, as vLLM does), or null for an assistant turn (one that only
// called tools).
absl::StatusOr<ChatMessage> ParseMessage(const json& m, size_t i) {
  if (!m.is_object()) return Bad(absl::StrFormat("messages[%d] must be an object", i));
  auto role = m.find("role");
  if (role == m.end() || !role->is_string()) return Bad(absl::StrFormat("messages[%d] needs a string 'role'", i));
  ChatMessage out{role->get<std::string>(), ""};
  auto content = m.find("content");
  if (content == m.end() || content->is_null()) {
    if (out.role == "assistant") return out;
    return Bad(absl::StrFormat("messages[%d].content is required for a '%s' message", i, out.role));
  }
  if (content->is_string()) {
    out.content = content->get<std::string>();
    return out;
  }
  if (!content->is_array()) return Bad(absl::StrFormat("messages[%d].content must be a string or an array of parts", i));
  for (size_t k = 0; k < content->size(); ++k) {
    const json& part = (*content)[k];
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Bad(absl::StrFormat("messages[%d].content[%d] needs a string 'type'", i, k));
    }
    const std::string type = part["type"].get<std::string>();
    if (type != "text") {
      return Bad(absl::StrFormat("messages[%d].content[%d] is of type '%s'; this model takes only text parts", i, k,
                                 type));
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return Bad(absl::StrFormat("messages[%d].content[%d].text must be a string", i, k));
    }
    if (k > 0) out.content += "\n";
    out.content += part["text"].get<std::string>();
  }
  return out;
}

}  // namespace

absl::StatusOr<ApiRequest> ParseApiRequest(const std::string& body, bool chat, int32_t default_max_tokens) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return Bad("the body is not valid JSON");
  if (!j.is_object()) return Bad("the body must be a JSON object");
  ApiRequest r;
  r.chat = chat;
  r.params.max_tokens = default_max_tokens;
  static const absl::flat_hash_set<std::string> kIgnored = {"user", "frequency_penalty", "presence_penalty",
                                                            "logit_bias"};
  bool chat_logprobs = false;  // chat asks with "logprobs": true and "top_logprobs": k
  int32_t top_logprobs = -1;
  for (const auto& [key, v] : j.items()) {
    if (key == "model") {
      if (!v.is_string()) return Bad("'model' must be a string");
      r.model = v.get<std::string>();
    } else if (key == "prompt" && !chat) {
      if (v.is_string()) {
        r.prompt = v.get<std::string>();
      } else if (v.is_array() && v.size() == 1 && v[0].is_string()) {
        r.prompt = v[0].get<std::string>();
      } else if (v.is_array() && !v.empty() && v[0].is_number_integer()) {
        for (const json& t : v) {
          if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
            return Bad("'prompt' token ids must be non-negative integers");
          }
          r.prompt_ids.push_back(t.get<int32_t>());
        }
      } else {
        return Bad("'prompt' must be a string, a list of one string, or a list of token ids");
      }
    } else if (key == "messages" && chat) {
      if (!v.is_array() || v.empty()) return Bad("'messages' must be a non-empty array");
      for (size_t i = 0; i < v.size(); ++i) {
        KVS_ASSIGN_OR_RETURN(ChatMessage m, ParseMessage(v[i], i));
        r.messages.push_back(std::move(m));
      }
    } else if (key == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) return Bad("'stream_options' must be an object");
      for (const auto& [k, o] : v.items()) {
        if (k != "include_usage") return Bad(absl::StrFormat("unknown field 'stream_options.%s'", k));
        if (!o.is_boolean()) return Bad("'stream_options.include_usage' must be a boolean");
        r.include_usage = o.get<bool>();
      }
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      if (!v.is_number_integer()) return Bad(absl::StrFormat("'%s' must be an integer", key));
      r.params.max_tokens = static_cast<int32_t>(std::clamp<int64_t>(v.get<int64_t>(), INT32_MIN, INT32_MAX));
    } else if (key == "temperature" || key == "top_p") {
      if (!v.is_number()) return Bad(absl::StrFormat("'%s' must be a number", key));
      (key == "temperature" ? r.params.temperature : r.params.top_p) = v.get<float>();
    } else if (key == "top_k") {
      if (!v.is_number_integer()) return Bad("'top_k' must be an integer");
      const int64_t k = v.get<int64_t>();
      r.params.top_k = k < 0 ? 0 : static_cast<int32_t>(std::min<int64_t>(k, INT32_MAX));  // -1: off, as vLLM
    } else if (key == "n") {
      if (!v.is_number_integer()) return Bad("'n' must be an integer");
      r.params.n = static_cast<int32_t>(std::clamp<int64_t>(v.get<int64_t>(), INT32_MIN, INT32_MAX));
    } else if (key == "seed") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) return Bad("'seed' must be a non-negative integer");
      r.params.seed = v.get<uint64_t>();
    } else if (key == "stop") {
      if (v.is_string()) {
        r.params.stop = {v.get<std::string>()};
      } else if (v.is_array()) {
        for (const json& s : v) {
          if (!s.is_string()) return Bad("'stop' entries must be strings");
          r.params.stop.push_back(s.get<std::string>());
        }
      } else if (!v.is_null()) {
        return Bad("'stop' must be a string or a list of strings");
      }
    } else if (key == "stream") {
      if (!v.is_boolean()) return Bad("'stream' must be a boolean");
      r.stream = v.get<bool>();
    } else if (key == "ignore_eos") {
      if (!v.is_boolean()) return Bad("'ignore_eos' must be a boolean");
      r.params.ignore_eos = v.get<bool>();
    } else if (key == "logprobs" && !chat) {  // completions: how many alternatives, 0..20
      if (v.is_null()) continue;
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTopLogprobs) {
        return Bad("'logprobs' must be an integer in 0..20");
      }
      r.params.logprobs = static_cast<int32_t>(v.get<int64_t>());
    } else if (key == "logprobs" && chat) {  // chat: whether to return them
      if (v.is_null()) continue;
      if (!v.is_boolean()) return Bad("'logprobs' must be a boolean");
      if (v.get<bool>()) r.params.logprobs = std::max(r.params.logprobs, 0);
      chat_logprobs = v.get<bool>();
    } else if (key == "top_logprobs" && chat) {
      if (v.is_null()) continue;
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTopLogprobs) {
        return Bad("'top_logprobs' must be an integer in 0..20");
      }
      top_logprobs = static_cast<int32_t>(v.get<int64_t>());
    } else if (key == "top_logprobs" || key == "echo" || key == "best_of" || key == "suffix" || key == "tools" ||
               key == "response_format") {
      if (!v.is_null() && !(v.is_boolean() && !v.get<bool>())) {
        return Bad(absl::StrFormat("'%s' is not supported by kvshard", key));
      }
    } else if (!kIgnored.contains(key)) {
      return Bad(absl::StrFormat("unknown field '%s'", key));
    }
  }
  if (top_logprobs >= 0) {
    if (!chat_logprobs) return Bad("'top_logprobs' needs 'logprobs': true");
    r.params.logprobs = top_logprobs;
  }
  if (j.contains("stream_options") && !j["stream_options"].is_null() && !r.stream) {
    return Bad("'stream_options' is only allowed with 'stream': true");
  }
  if (!chat && !j.contains("prompt")) return Bad("'prompt' is required");
  if (chat && !j.contains("messages")) return Bad("'messages' is required");
  KVS_RETURN_IF_ERROR(r.params.Validate());
  return r;
}

json CompletionResponse(const ApiRequest& r, const std::string& id, int64_t created, const std::vector<ApiChoice>& choices,
                        int32_t prompt_tokens, int32_t output_tokens) {
  json out = {{"id", id},
              {"object", r.chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", r.model},
              {"usage",
               {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", output_tokens},
                {"total_tokens", prompt_tokens + output_tokens}}}};
  out["choices"] = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    json c = {{"index", i}, {"finish_reason", FinishReasonName(choices[i].reason)}};
    if (r.chat) {
      c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    } else {
      c["text"] = choices[i].text;
    }
    c["logprobs"] = LogprobsJson(r, choices[i].logprobs, 0);
    out["choices"].push_back(c);
  }
  return out;
}

json LogprobsJson(const ApiRequest& r, const std::vector<ApiLogprob>& lps, int64_t text_offset) {
  if (r.params.logprobs < 0) return nullptr;
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char ch : s) b.push_back(static_cast<int>(ch));
    return b;
  };
  if (r.chat) {
    json content = json::array();
    for (const ApiLogprob& lp : lps) {
      json top = json::array();
      for (const auto& [tok, v] : lp.top) top.push_back({{"token", tok}, {"logprob", v}, {"bytes", bytes(tok)}});
      content.push_back({{"token", lp.token}, {"logprob", lp.logprob}, {"bytes", bytes(lp.token)}, {"top_logprobs", top}});
    }
    return json{{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
  for (const ApiLogprob& lp : lps) {
    tokens.push_back(lp.token);
    token_logprobs.push_back(lp.logprob);
    json top = json::object();
    for (const auto& [tok, v] : lp.top) {
      if (!top.contains(tok)) top[tok] = v;  // distinct ids can share a text; keep the likelier
    }
    top_logprobs.push_back(top);
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(lp.token.size());
  }
  return json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

json StreamChunk(const ApiRequest& r, const std::string& id, int64_t created, int32_t index, const std::string& delta,
                 FinishReason reason, bool first, const std::vector<ApiLogprob>& logprobs, int64_t text_offset) {
  json c = {{"index", index},
            {"finish_reason", reason == FinishReason::kNone ? json(nullptr) : json(FinishReasonName(reason))}};
  if (r.chat) {
    c["delta"] = json::object();
    if (first) c["delta"]["role"] = "assistant";
    if (!delta.empty() || first) c["delta"]["content"] = delta;
  } else {
    c["text"] = delta;
  }
  c["logprobs"] = LogprobsJson(r, logprobs, text_offset);
  return json{{"id", id},
              {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", r.model},
              {"choices", json::array({c})}};
}

json UsageChunk(const ApiRequest& r, const std::string& id, int64_t created, int32_t prompt_tokens,
                int32_t output_tokens) {
  return json{{"id", id},
              {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", r.model},
              {"choices", json::array()},
              {"usage",
               {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", output_tokens},
                {"total_tokens", prompt_tokens + output_tokens}}}};
}

std::string ErrorBody(const std::string& message, const std::string& type, const std::string& param) {
  return json{{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
                         {"code", nullptr}}}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace kvs
