#include "parallel/dp_messages.h"

namespace kvs {

using nlohmann::json;

json RequestToJson(const Request& r) {
  const SamplingParams& p = r.params;
  return json{{"id", r.id},
              {"prompt_ids", r.prompt_ids},
              {"temperature", p.temperature},
              {"top_k", p.top_k},
              {"top_p", p.top_p},
              {"seed", p.seed},
              {"max_tokens", p.max_tokens},
              {"stop", p.stop},
              {"ignore_eos", p.ignore_eos},
              {"n", p.n},
              {"logprobs", p.logprobs},
              {"priority", r.priority}};
}

Request RequestFromJson(const json& j) {
  Request r;
  r.id = j.at("id").get<std::string>();
  r.prompt_ids = j.at("prompt_ids").get<std::vector<int32_t>>();
  SamplingParams& p = r.params;
  p.temperature = j.at("temperature").get<float>();
  p.top_k = j.at("top_k").get<int32_t>();
  p.top_p = j.at("top_p").get<float>();
  p.seed = j.at("seed").get<uint64_t>();
  p.max_tokens = j.at("max_tokens").get<int32_t>();
  p.stop = j.at("stop").get<std::vector<std::string>>();
  p.ignore_eos = j.at("ignore_eos").get<bool>();
  p.n = j.at("n").get<int32_t>();
  p.logprobs = j.value("logprobs", -1);
  r.priority = j.at("priority").get<int32_t>();
  return r;
}

json ResultToJson(const RequestResult& r) {
  const RequestMetrics& m = r.metrics;
  return json{{"id", r.id},
              {"index", r.index},
              {"output_ids", r.output_ids},
              {"text", r.text},
              {"reason", static_cast<int>(r.reason)},
              {"prompt_tokens", r.prompt_tokens},
              {"metrics", {m.queue_s, m.ttft_s, m.tpot_s, m.max_itl_s, m.e2e_s}}};
}

RequestResult ResultFromJson(const json& j) {
  RequestResult r;
  r.id = j.at("id").get<std::string>();
  r.index = j.at("index").get<int32_t>();
  r.output_ids = j.at("output_ids").get<std::vector<int32_t>>();
  r.text = j.at("text").get<std::string>();
  r.reason = static_cast<FinishReason>(j.at("reason").get<int>());
  r.prompt_tokens = j.at("prompt_tokens").get<int32_t>();
  const std::vector<double> m = j.at("metrics").get<std::vector<double>>();
  r.metrics = RequestMetrics{m.at(0), m.at(1), m.at(2), m.at(3), m.at(4)};
  return r;
}

json EventToJson(const TokenEvent& e) {
  json lps = json::array();
  for (const TokenLogprob& lp : e.logprobs) {
    json top = json::array();
    for (const auto& [id, v] : lp.top) top.push_back({id, v});
    lps.push_back({lp.token, lp.logprob, top});
  }
  return json{{"id", e.request_id},
              {"index", e.index},
              {"delta", e.text_delta},
              {"finished", e.finished},
              {"reason", static_cast<int>(e.reason)},
              {"logprobs", lps}};
}

TokenEvent EventFromJson(const json& j) {
  TokenEvent e;
  e.request_id = j.at("id").get<std::string>();
  e.index = j.at("index").get<int32_t>();
  e.text_delta = j.at("delta").get<std::string>();
  e.finished = j.at("finished").get<bool>();
  e.reason = static_cast<FinishReason>(j.at("reason").get<int>());
  for (const json& lp : j.at("logprobs")) {
    TokenLogprob t;
    t.token = lp.at(0).get<int32_t>();
    t.logprob = lp.at(1).get<float>();
    for (const json& alt : lp.at(2)) t.top.emplace_back(alt.at(0).get<int32_t>(), alt.at(1).get<float>());
    e.logprobs.push_back(std::move(t));
  }
  return e;
}

absl::StatusOr<json> ParseMessage(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError("malformed message between leaders");
  return j;
}

std::string DumpMessage(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace kvs
