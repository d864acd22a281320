#include "runtime/server/http_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace kvs {
namespace {

std::atomic<uint64_t> g_request_counter{0};

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void SendError(httplib::Response& res, int status, const std::string& message, const std::string& type) {
  res.status = status;
  res.set_content(ErrorBody(message, type), "application/json");
}

// Maps a Status from parsing or admission to OpenAI's HTTP codes.
void SendStatus(httplib::Response& res, const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return SendError(res, 400, std::string(s.message()), "invalid_request_error");
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
      res.set_header("Retry-After", "1");
      return SendError(res, 503, std::string(s.message()), "server_overloaded");
    default: return SendError(res, 500, std::string(s.message()), "internal_error");
  }
}

}  // namespace

HttpServer::HttpServer(EngineService& service, HttpOptions options)
    : service_(service), options_(std::move(options)), server_(std::make_unique<httplib::Server>()) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Routes() {
  httplib::Server& s = *server_;
  s.set_payload_max_length(options_.max_body_bytes);
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!options_.api_key.empty() && absl::StartsWith(req.path, "/v1/") &&
        req.get_header_value("Authorization") != "Bearer " + options_.api_key) {
      SendError(res, 401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors httplib raises itself (413, 404 for unknown paths) get OpenAI's JSON too.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) return SendError(res, 413, "the request body is too large", "invalid_request_error");
    if (res.status == 404) return SendError(res, 404, "no route " + req.path, "invalid_request_error");
    SendError(res, res.status, "request failed", "invalid_request_error");
  });
  s.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("{\"status\":\"ok\"}", "application/json"); });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(service_.MetricsText(), "text/plain; version=0.0.4");
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const nlohmann::json j = {{"object", "list"},
                              {"data", {{{"id", options_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "kvshard"}}}}};
    res.set_content(j.dump(), "application/json");
  });
  auto generate = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res) {
      absl::StatusOr<ApiRequest> r = ParseApiRequest(req.body, chat, options_.default_max_tokens);
      if (!r.ok()) return SendStatus(res, r.status());
      if (r->model.empty()) r->model = options_.model_name;
      if (r->model != options_.model_name) {
        return SendError(res, 404, absl::StrFormat("The model '%s' does not exist; this server serves '%s'", r->model,
                                                   options_.model_name),
                         "invalid_request_error");
      }
      const std::string id = absl::StrFormat("%s-%d", chat ? "chatcmpl" : "cmpl", ++g_request_counter);
      const int64_t created = Now();
      absl::StatusOr<std::shared_ptr<Stream>> stream = service_.Submit(*r, id);
      if (!stream.ok()) return SendStatus(res, stream.status());
      if (absl::Status s = (*stream)->WaitAccepted(); !s.ok()) return SendStatus(res, s);
      if (!r->stream) {
        std::vector<ApiChoice> choices(r->params.n);
        std::vector<StreamEvent> events;
        while ((*stream)->Next(events, std::chrono::milliseconds(100))) {
        }
        if (absl::Status s = (*stream)->error(); !s.ok()) return SendStatus(res, s);
        for (StreamEvent& e : events) {
          choices[e.index].text += e.delta;
          if (e.reason != FinishReason::kNone) choices[e.index].reason = e.reason;
          for (ApiLogprob& lp : e.logprobs) choices[e.index].logprobs.push_back(std::move(lp));
        }
        const auto body = CompletionResponse(*r, id, created, choices, (*stream)->prompt_tokens(), (*stream)->output_tokens());
        return res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
      }
      // Server-sent events: one chunk per delta, then [DONE]. A failed write means the client
      // left: the request is cancelled and its blocks freed.
      auto first = std::make_shared<std::vector<bool>>(r->params.n, true);
      auto offsets = std::make_shared<std::vector<int64_t>>(r->params.n, 0);  // text_offset per sample
      auto request = std::make_shared<ApiRequest>(*r);
      std::shared_ptr<Stream> st = *stream;
      res.set_chunked_content_provider(
          "text/event-stream", [this, st, id, created, first, offsets, request](size_t, httplib::DataSink& sink) {
            std::vector<StreamEvent> events;
            const bool more = st->Next(events, std::chrono::milliseconds(50));
            for (const StreamEvent& e : events) {
              const auto chunk =
                  StreamChunk(*request, id, created, e.index, e.delta, e.reason, (*first)[e.index], e.logprobs, (*offsets)[e.index]);
              (*first)[e.index] = false;
              for (const ApiLogprob& lp : e.logprobs) (*offsets)[e.index] += static_cast<int64_t>(lp.token.size());
              const std::string line = "data: " + chunk.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
              if (!sink.is_writable() || !sink.write(line.data(), line.size())) {
                service_.Cancel(id);
                return false;
              }
            }
            if (!sink.is_writable()) {
              service_.Cancel(id);
              return false;
            }
            if (!more) {
              static const std::string done = "data: [DONE]\n\n";
              sink.write(done.data(), done.size());
              sink.done();
            }
            return true;
          },
          [this, st, id](bool success) {
            if (!success) service_.Cancel(id);
          });
    };
  };
  s.Post("/v1/completions", generate(false));
  s.Post("/v1/chat/completions", generate(true));
}

absl::Status HttpServer::Start() {
  Routes();
  if (!server_->bind_to_port(options_.host.c_str(), options_.port)) {
    return absl::UnavailableError(absl::StrFormat("cannot listen on %s:%d (in use, or not an address here)", options_.host,
                                                  options_.port));
  }
  port_ = options_.port;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (server_ && server_->is_running()) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace kvs
