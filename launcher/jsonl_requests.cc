#include "launcher/jsonl_requests.h"

#include <fstream>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvs {
namespace {

using nlohmann::json;

absl::Status ParseItem(const json& j, BatchItem& item) {
  if (!j.is_object()) return absl::InvalidArgumentError("each line must be a JSON object");
  // The id first, so that an error record about the rest of the line still carries it.
  if (auto it = j.find("id"); it != j.end()) {
    if (it->is_string()) item.id = it->get<std::string>();
    else if (it->is_number_integer()) item.id = std::to_string(it->get<int64_t>());
    else return absl::InvalidArgumentError("'id' must be a string or an integer");
  }
  for (const auto& [key, v] : j.items()) {
    static const absl::flat_hash_set<std::string> kKnown = {"id", "prompt", "prompt_ids", "messages", "max_tokens", "temperature",
                                                            "top_p", "top_k", "seed", "stop", "n", "priority"};
    if (!kKnown.contains(key)) return absl::InvalidArgumentError(absl::StrFormat("unknown field '%s'", key));
  }
  const bool has_prompt = j.contains("prompt");
  const bool has_messages = j.contains("messages");
  const bool has_ids = j.contains("prompt_ids");
  if (int(has_prompt) + int(has_messages) + int(has_ids) != 1) {
    return absl::InvalidArgumentError("give exactly one of 'prompt', 'prompt_ids' or 'messages'");
  }
  if (has_ids) {
    const json& ids = j["prompt_ids"];
    if (!ids.is_array() || ids.empty()) return absl::InvalidArgumentError("'prompt_ids' must be a non-empty array of token ids");
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return absl::InvalidArgumentError("'prompt_ids' entries must be non-negative integers");
      }
      item.prompt_ids.push_back(id.get<int32_t>());
    }
  } else if (has_prompt) {
    if (!j["prompt"].is_string()) return absl::InvalidArgumentError("'prompt' must be a string");
    item.prompt = j["prompt"].get<std::string>();
  } else {
    const json& m = j["messages"];
    if (!m.is_array() || m.empty()) return absl::InvalidArgumentError("'messages' must be a non-empty array");
    for (const json& msg : m) {
      if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string() || !msg.contains("content") ||
          !msg["content"].is_string()) {
        return absl::InvalidArgumentError("each message needs string 'role' and 'content'");
      }
      item.messages.push_back({msg["role"].get<std::string>(), msg["content"].get<std::string>()});
    }
  }
  auto number = [&](const char* key, auto& dst, bool integer) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end()) return absl::OkStatus();
    if (integer ? !it->is_number_integer() : !it->is_number()) {
      return absl::InvalidArgumentError(absl::StrFormat("'%s' must be %s", key, integer ? "an integer" : "a number"));
    }
    dst = it->get<std::remove_reference_t<decltype(dst)>>();
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(number("max_tokens", item.params.max_tokens, true));
  KVS_RETURN_IF_ERROR(number("temperature", item.params.temperature, false));
  KVS_RETURN_IF_ERROR(number("top_p", item.params.top_p, false));
  KVS_RETURN_IF_ERROR(number("top_k", item.params.top_k, true));
  KVS_RETURN_IF_ERROR(number("n", item.params.n, true));
  KVS_RETURN_IF_ERROR(number("priority", item.priority, true));
  if (auto it = j.find("seed"); it != j.end()) {
    if (!it->is_number_unsigned()) return absl::InvalidArgumentError("'seed' must be a non-negative integer");
    item.params.seed = it->get<uint64_t>();
  }
  if (auto it = j.find("stop"); it != j.end()) {
    item.params.stop.clear();
    if (it->is_string()) {
      item.params.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const json& s : *it) {
        if (!s.is_string()) return absl::InvalidArgumentError("'stop' entries must be strings");
        item.params.stop.push_back(s.get<std::string>());
      }
    } else {
      return absl::InvalidArgumentError("'stop' must be a string or a list of strings");
    }
  }
  return item.params.Validate();
}

}  // namespace

absl::StatusOr<std::vector<BatchItem>> ReadBatchFile(const std::string& path, const SamplingParams& defaults,
                                                     bool strict) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s: cannot open the input file", path));
  std::vector<BatchItem> items;
  absl::flat_hash_map<std::string, int32_t> first_line;  // id -> the line that holds it
  std::string line;
  for (int32_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    BatchItem item;
    item.params = defaults;
    item.line = line_no;
    item.id = std::to_string(items.size());
    const json j = json::parse(line, nullptr, false);
    absl::Status s = j.is_discarded() ? absl::InvalidArgumentError("not valid JSON") : ParseItem(j, item);
    if (s.ok()) {
      if (auto [it, fresh] = first_line.emplace(item.id, line_no); !fresh) {
        s = absl::InvalidArgumentError(absl::StrFormat("id '%s' appears twice (first on line %d)", item.id, it->second));
      }
    }
    if (!s.ok()) {
      if (strict) return absl::InvalidArgumentError(absl::StrFormat("%s:%d: %s", path, line_no, s.message()));
      BatchItem bad;  // only the id (if it parsed) and the line survive
      bad.id = item.id;
      bad.line = line_no;
      bad.error = std::string(s.message());
      items.push_back(std::move(bad));
      continue;
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s: no requests in the file", path));
  return items;
}

}  // namespace kvs
