#include "runtime/server/api_routes.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace kvs {
namespace {

struct Route {
  const char* path;
  const char* method;
};
constexpr std::array<Route, 5> kRoutes = {{{"/health", "GET"},
                                           {"/metrics", "GET"},
                                           {"/v1/models", "GET"},
                                           {"/v1/completions", "POST"},
                                           {"/v1/chat/completions", "POST"}}};

}  // namespace

RouteDecision DecideRoute(const std::string& method, const std::string& path) {
  for (const Route& r : kRoutes) {
    if (path != r.path) continue;
    if (method == r.method) return {200, ""};
    return {405, r.method};
  }
  return {404, ""};
}

absl::Status CheckJsonContentType(const std::string& content_type) {
  const std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';'))));
  if (t.empty() || t == "application/json" || absl::EndsWith(t, "+json")) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("Content-Type '%s' is not JSON; send the body as application/json", content_type));
}

int HttpCodeOf(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

std::string ErrorType(const absl::Status& s) {
  switch (HttpCodeOf(s)) {
    case 400: return "invalid_request_error";
    case 404: return "invalid_request_error";
    case 503: return "server_overloaded";
    default: return "internal_error";
  }
}

}  // namespace kvs
