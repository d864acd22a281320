// What the leaders of a data-parallel job tell each other, as JSON: requests (global rank 0 to
// the group that runs them), results and token events (back). Both ends are the same build, so a
// message that does not parse is a bug, reported as DataLoss.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"

namespace kvs {

nlohmann::json RequestToJson(const Request& r);
Request RequestFromJson(const nlohmann::json& j);
nlohmann::json ResultToJson(const RequestResult& r);
RequestResult ResultFromJson(const nlohmann::json& j);
nlohmann::json EventToJson(const TokenEvent& e);
TokenEvent EventFromJson(const nlohmann::json& j);
absl::StatusOr<nlohmann::json> ParseMessage(const std::string& text);
// JSON text of `j`; invalid UTF-8 in generated text (a token boundary inside a character) is
// replaced rather than failing the dump.
std::string DumpMessage(const nlohmann::json& j);

}  // namespace kvs
