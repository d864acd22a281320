// The OpenAI-compatible HTTP front end (cpp-httplib), on a group leader, over an EngineService:
//   POST /v1/completions, POST /v1/chat/completions (stream: server-sent events)
//   GET /v1/models, GET /health, GET /metrics (Prometheus text)
// Errors use OpenAI's error JSON: 400 invalid body (naming the field or the context limit),
// 401 without the --api-key, 404 unknown model, 413 body over --max-body-bytes, 503 with
// Retry-After when full or draining. A client that disconnects mid-stream has its request
// aborted. Listens on its own threads; Start returns once it accepts connections.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "runtime/server/engine_service.h"

namespace httplib {
class Server;
}

namespace kvs {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;     // empty: no authentication
  std::string model_name;  // what /v1/models lists and requests must name (or omit)
  size_t max_body_bytes = 1 << 20;
  int32_t default_max_tokens = 256;
};

class HttpServer {
 public:
  HttpServer(EngineService& service, HttpOptions options);
  ~HttpServer();
  absl::Status Start();
  void Stop();
  int port() const { return port_; }

 private:
  void Routes();
  EngineService& service_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace kvs
