// What the HTTP layer decides before any engine work, as pure functions (unit-tested without
// sockets): which route a method and path reach, whether a body's content type is JSON, and
// which HTTP status and OpenAI error type a Status maps to.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace kvs {

struct RouteDecision {
  int status = 200;   // 200: a route answers; 404: no such path; 405: the path, not this method
  std::string allow;  // for 405: the methods the path takes
};
RouteDecision DecideRoute(const std::string& method, const std::string& path);

// Generation bodies must be JSON: application/json (any parameters) or a +json type, or no
// Content-Type at all. text/plain, form and multipart bodies are what a browser may post across
// sites without asking first, so refusing them keeps a page from driving an unkeyed server.
absl::Status CheckJsonContentType(const std::string& content_type);

// 400 invalid argument, 404 not found, 503 exhausted/unavailable (the caller adds Retry-After),
// the rest 500.
int HttpCodeOf(const absl::Status& s);
std::string ErrorType(const absl::Status& s);

}  // namespace kvs
