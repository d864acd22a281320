// The OpenAI-compatible HTTP front end, on a group leader, over an EngineService:
//   POST /v1/completions, POST /v1/chat/completions (stream: server-sent events)
//   GET /v1/models, GET /health, GET /metrics (Prometheus text)
// Event-driven (Boost.Beast over Asio, see docs/architecture.md#http-front-end): a few I/O threads
// serve every connection, so thousands of streams can be open at once and none waits for a
// thread; a connection's stream is woken by its request's Stream listener, never polled.
// Errors use OpenAI's error JSON: 400 invalid body (naming the field or the context limit),
// 401 without the --api-key, 404 unknown path or model, 405 wrong method (with Allow), 413 body
// over --max-body-bytes, 415 a body that is not JSON (a cross-site form or text/plain post), 431
// headers over the limit, 503 with Retry-After when full or draining. Every connection has a
// header, body, keep-alive idle and write deadline, so slow or silent clients cost one socket
// and nothing else. A client that hangs up (streaming or not) has its request aborted.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "runtime/server/engine_service.h"

namespace kvs {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;     // empty: no authentication
  std::string model_name;  // what /v1/models lists and requests must name (or omit)
  size_t max_body_bytes = 1 << 20;
  size_t max_header_bytes = 64 << 10;  // 431 beyond
  int32_t default_max_tokens = 256;
  int io_threads = 2;
  // A new connection must send its whole header within header_timeout; between requests a
  // keep-alive connection may stay silent for keepalive_timeout; a body must arrive within
  // body_timeout; every write must complete within write_timeout (a client that stops reading
  // is treated as gone).
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds keepalive_timeout{15000};
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};
};

class HttpServer {
 public:
  HttpServer(EngineService& service, HttpOptions options);
  ~HttpServer();
  // Binds and starts the I/O threads; returns once connections are accepted.
  absl::Status Start();
  // Draining: refuses new connections; requests in flight carry on, and a request that arrives on
  // an open keep-alive connection (a load balancer's /health probe, say) gets 503 and
  // `Connection: close`. Any thread.
  void StopAccepting();
  // Lets responses in flight finish writing for up to `grace`, then closes every connection and
  // joins the I/O threads.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));
  int port() const { return port_; }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace kvs
