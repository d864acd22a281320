#include "runtime/server/http_server.h"

#include <sys/resource.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "runtime/server/api_routes.h"

namespace kvs {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

std::atomic<uint64_t> g_request_counter{0};

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// A file descriptor per connection: the default soft limit (1024) would cap the server below the
// streams it is asked to hold.
void RaiseOpenFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace

class Session;

struct HttpServer::Impl {
  Impl(EngineService& s, HttpOptions o) : service(s), options(std::move(o)), acceptor(ioc) {}
  EngineService& service;
  const HttpOptions options;
  net::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::atomic<bool> accepting{true};
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> busy_connections{0};  // with a request in flight or a response being written
  std::mutex sessions_mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;

  void Accept();
  // Runs `f` on every open session's executor.
  template <typename F>
  void ForEachSession(F f);
};

// One TCP connection: reads requests one after another (keep-alive), answers each, and for a
// generation request follows its Stream until the end. Every handler runs on the connection's
// strand; the Stream's listener only posts there.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server) : stream_(std::move(socket)), server_(server) {
    ++server_.open_connections;
  }
  ~Session() {
    --server_.open_connections;
    if (busy_) --server_.busy_connections;
    std::lock_guard<std::mutex> lock(server_.sessions_mu);
    server_.sessions.erase(this);
  }

  void Start() {
    {
      std::lock_guard<std::mutex> lock(server_.sessions_mu);
      server_.sessions[this] = weak_from_this();
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadHeader(); });
  }

  // Runs `f` on this connection's strand.
  template <typename F>
  void Post(F f) {
    net::post(stream_.get_executor(), [self = shared_from_this(), f] { f(*self); });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    if (stream_active_ && !request_done_) server_.service.Cancel(*st_);
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    hold_.reset();  // last: the caller's handler still holds the session
  }

 private:
  const HttpOptions& opt() const { return server_.options; }

  void SetBusy(bool b) {
    if (b == busy_) return;
    busy_ = b;
    b ? ++server_.busy_connections : --server_.busy_connections;
  }

  void ReadHeader() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(opt().max_header_bytes));
    parser_->body_limit(opt().max_body_bytes);
    stream_.expires_after(requests_ == 0 ? opt().header_timeout : opt().keepalive_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, size_t) {
    if (ec == http::error::header_limit) {
      SetBusy(true);
      return Reply(http::status::request_header_fields_too_large,
                   ErrorBody("the request headers are larger than the server accepts", "invalid_request_error"), false);
    }
    if (ec == http::error::body_limit) {  // a Content-Length over the limit fails the header read
      SetBusy(true);
      return Reply(http::status::payload_too_large, ErrorBody("the request body is too large", "invalid_request_error"),
                   false);
    }
    if (ec) return Close();  // timeout, hang-up, or not HTTP
    SetBusy(true);
    ++requests_;
    const auto& req = parser_->get();
    if (const auto len = parser_->content_length(); len && *len > opt().max_body_bytes) {
      return Reply(http::status::payload_too_large, ErrorBody("the request body is too large", "invalid_request_error"),
                   false);
    }
    if (absl::EqualsIgnoreCase(std::string(req[http::field::expect]), "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, req.version());
      stream_.expires_after(opt().write_timeout);
      return http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code ec, size_t) {
        if (ec) return self->Close();
        self->ReadBody();
      });
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(opt().body_timeout);
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::OnBody, shared_from_this()));
  }

  void OnBody(beast::error_code ec, size_t) {
    if (ec == http::error::body_limit) {
      return Reply(http::status::payload_too_large, ErrorBody("the request body is too large", "invalid_request_error"),
                   false);
    }
    if (ec) return Close();
    stream_.expires_never();
    Handle(parser_->release());
  }

  void Handle(http::request<http::string_body> req) {
    keep_alive_ = req.keep_alive() && !server_.service.draining();
    std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    const std::string method(req.method_string());
    const RouteDecision route = DecideRoute(method, path);
    if (route.status == 404) return ReplyError(404, "no route " + path, "invalid_request_error");
    if (route.status == 405) {
      extra_headers_ = {{"Allow", route.allow}};
      return ReplyError(405, absl::StrFormat("%s is not allowed on %s (allowed: %s)", method, path, route.allow),
                        "invalid_request_error");
    }
    if (!opt().api_key.empty() && absl::StartsWith(path, "/v1/") &&
        std::string(req[http::field::authorization]) != "Bearer " + opt().api_key) {
      return ReplyError(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error");
    }
    if (path == "/health") {
      if (server_.service.draining()) {
        keep_alive_ = false;
        return Reply(http::status::service_unavailable, R"({"status":"draining"})", keep_alive_);
      }
      return Reply(http::status::ok, R"({"status":"ok"})", keep_alive_);
    }
    if (path == "/metrics") {
      std::string text = server_.service.MetricsText();
      absl::StrAppendFormat(&text,
                            "# HELP kvshard_http_connections_open Open HTTP connections\n"
                            "# TYPE kvshard_http_connections_open gauge\nkvshard_http_connections_open %d\n",
                            server_.open_connections.load());
      return Reply(http::status::ok, std::move(text), keep_alive_, "text/plain; version=0.0.4");
    }
    if (path == "/v1/models") {
      const nlohmann::json j = {
          {"object", "list"},
          {"data", {{{"id", opt().model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "kvshard"}}}}};
      return Reply(http::status::ok, Dump(j), keep_alive_);
    }
    // Generation.
    if (absl::Status s = CheckJsonContentType(std::string(req[http::field::content_type])); !s.ok()) {
      return ReplyError(415, std::string(s.message()), "invalid_request_error");
    }
    if (server_.service.draining()) {
      keep_alive_ = false;
      return ReplyStatus(absl::UnavailableError("the server is shutting down"));
    }
    const bool chat = path == "/v1/chat/completions";
    absl::StatusOr<ApiRequest> r = ParseApiRequest(req.body(), chat, opt().default_max_tokens);
    if (!r.ok()) return ReplyStatus(r.status());
    if (r->model.empty()) r->model = opt().model_name;
    if (r->model != opt().model_name) {
      return ReplyError(404,
                        absl::StrFormat("The model '%s' does not exist; this server serves '%s'", r->model,
                                        opt().model_name),
                        "invalid_request_error");
    }
    api_ = std::move(*r);
    id_ = absl::StrFormat("%s-%d", chat ? "chatcmpl" : "cmpl", ++g_request_counter);
    created_ = Now();
    absl::StatusOr<std::shared_ptr<Stream>> st = server_.service.Submit(api_, id_);
    if (!st.ok()) return ReplyStatus(st.status());
    st_ = *std::move(st);
    stream_active_ = true;
    request_done_ = false;
    sse_started_ = false;
    choices_.assign(api_.params.n, ApiChoice{});
    first_.assign(api_.params.n, true);
    offsets_.assign(api_.params.n, 0);
    ++generation_;
    std::weak_ptr<Session> weak = weak_from_this();
    auto executor = stream_.get_executor();
    st_->SetListener([weak, executor, this_pump = &pump_posted_] {
      // Coalesces wake-ups: one pump is queued at a time (the session outlives the flag while
      // the weak pointer locks).
      if (auto self = weak.lock(); self && !this_pump->exchange(true)) {
        net::post(executor, [self] { self->Pump(); });
      }
    });
    // While the engine works, no socket operation may be pending (a stream between writes), so
    // the connection holds itself until the answer is written or it closes.
    hold_ = shared_from_this();
    WatchForHangUp(generation_);
    Pump();
  }

  // While a request runs, a readable socket with nothing to read means the client hung up.
  void WatchForHangUp(uint64_t generation) {
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(), generation](beast::error_code ec) {
      if (self->closed_ || self->generation_ != generation || self->request_done_) return;
      if (ec) {  // a reset or error on the socket is a hang-up too; aborted waits are not
        if (ec != net::error::operation_aborted) self->Close();
        return;
      }
      char c;
      const ssize_t n = ::recv(self->stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return self->Close();
      if (n < 0) return self->WatchForHangUp(generation);
      // n > 0: the client pipelined its next request; a hang-up shows at the next write.
    });
  }

  // Moves whatever the Stream has to the client.
  void Pump() {
    pump_posted_ = false;
    if (closed_ || request_done_ || !stream_active_) return;
    if (!sse_started_) {
      if (!st_->accepted()) {
        if (absl::Status e = st_->error(); !e.ok()) Finish(e);
        return;  // the listener calls again when it is accepted or fails
      }
      if (api_.stream) StartEventStream();
    }
    std::vector<StreamEvent> events;
    const bool more = st_->Poll(events);
    if (!api_.stream) {
      for (StreamEvent& e : events) {
        ApiChoice& c = choices_[e.index];
        c.text += e.delta;
        if (e.reason != FinishReason::kNone) c.reason = e.reason;
        for (ApiLogprob& lp : e.logprobs) c.logprobs.push_back(std::move(lp));
      }
      if (!more) Finish(st_->error());
      return;
    }
    std::string out;
    for (const StreamEvent& e : events) {
      const auto chunk = StreamChunk(api_, id_, created_, e.index, e.delta, e.reason, first_[e.index], e.logprobs,
                                     offsets_[e.index]);
      first_[e.index] = false;
      for (const ApiLogprob& lp : e.logprobs) offsets_[e.index] += static_cast<int64_t>(lp.token.size());
      out += "data: " + Dump(chunk) + "\n\n";
    }
    if (!more) {
      if (absl::Status e = st_->error(); !e.ok()) {
        out += "data: " + ErrorBody(std::string(e.message()), ErrorType(e)) + "\n\n";
      } else if (api_.include_usage) {
        out += "data: " + Dump(UsageChunk(api_, id_, created_, st_->prompt_tokens(), st_->output_tokens())) + "\n\n";
      }
      out += "data: [DONE]\n\n";
      request_done_ = true;
    }
    if (!out.empty()) Queue(Out{Out::kChunk, std::move(out)});
    if (request_done_) Queue(Out{Out::kLastChunk, {}});
  }

  // The whole non-streaming answer, or the error of a request that was never accepted.
  void Finish(const absl::Status& error) {
    request_done_ = true;
    if (!error.ok()) return ReplyStatus(error);
    const auto body = CompletionResponse(api_, id_, created_, choices_, st_->prompt_tokens(), st_->output_tokens());
    Reply(http::status::ok, Dump(body), keep_alive_);
  }

  void StartEventStream() {
    sse_started_ = true;
    sse_res_.emplace(http::status::ok, 11);
    sse_res_->set(http::field::content_type, "text/event-stream");
    sse_res_->set(http::field::cache_control, "no-cache");
    sse_res_->keep_alive(keep_alive_);
    sse_res_->chunked(true);
    sse_sr_.emplace(*sse_res_);
    Queue(Out{Out::kHeader, {}});
  }

  struct Out {
    enum Kind { kHeader, kChunk, kLastChunk } kind;
    std::string data;
  };

  void Queue(Out o) {
    out_.push_back(std::move(o));
    Write();
  }

  void Write() {
    if (writing_ || out_.empty() || closed_) return;
    writing_ = true;
    stream_.expires_after(opt().write_timeout);
    auto done = beast::bind_front_handler(&Session::OnWrite, shared_from_this());
    Out& o = out_.front();
    switch (o.kind) {
      case Out::kHeader: return http::async_write_header(stream_, *sse_sr_, std::move(done));
      case Out::kChunk: return net::async_write(stream_, http::make_chunk(net::buffer(o.data)), std::move(done));
      case Out::kLastChunk: return net::async_write(stream_, http::make_chunk_last(), std::move(done));
    }
  }

  void OnWrite(beast::error_code ec, size_t) {
    writing_ = false;
    stream_.expires_never();
    if (ec) return Close();  // the client left or stopped reading: Close cancels the request
    const bool last = out_.front().kind == Out::kLastChunk;
    out_.pop_front();
    if (last) return AfterResponse();
    Write();
  }

  void ReplyError(int status, const std::string& message, const std::string& type) {
    Reply(static_cast<http::status>(status), ErrorBody(message, type), keep_alive_);
  }

  // Maps a Status from parsing, admission or the engine to OpenAI's HTTP codes.
  void ReplyStatus(const absl::Status& s) {
    const int code = HttpCodeOf(s);
    if (code == 503) extra_headers_.push_back({"Retry-After", "1"});
    if (code == 503 && server_.service.draining()) keep_alive_ = false;
    ReplyError(code, std::string(s.message()), ErrorType(s));
  }

  void Reply(http::status status, std::string body, bool keep_alive, const char* type = "application/json") {
    request_done_ = true;
    keep_alive_ = keep_alive;
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::content_type, type);
    for (const auto& [k, v] : extra_headers_) res->set(k, v);
    extra_headers_.clear();
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    stream_.expires_after(opt().write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      self->stream_.expires_never();
      if (ec) return self->Close();
      self->AfterResponse();
    });
  }

  void AfterResponse() {
    hold_.reset();  // the write's handler holds the session from here
    stream_active_ = false;
    if (st_) st_->SetListener(nullptr);
    st_.reset();
    sse_sr_.reset();
    sse_res_.reset();
    SetBusy(false);
    if (!keep_alive_) return LingeringClose();
    ReadHeader();
  }

  // After the last response: no more writes, and what the client still sends (the rest of a body
  // refused with 413, say) is read and dropped for a moment, so that the client, which may send
  // its whole body before it reads, sees the answer instead of a reset connection.
  void LingeringClose() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    discard_ = std::make_shared<std::array<char, 16384>>();
    Discard(0);
  }
  void Discard(size_t total) {
    stream_.async_read_some(net::buffer(*discard_), [self = shared_from_this(), total](beast::error_code ec, size_t n) {
      if (ec || total + n > (64u << 20)) return self->Close();
      self->Discard(total + n);
    });
  }

  beast::tcp_stream stream_;
  HttpServer::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool closed_ = false, busy_ = false, keep_alive_ = true;
  int64_t requests_ = 0;
  std::vector<std::pair<std::string, std::string>> extra_headers_;

  // The request in flight.
  ApiRequest api_;
  std::string id_;
  int64_t created_ = 0;
  std::shared_ptr<Stream> st_;
  std::shared_ptr<Session> hold_;  // self, while a generation request is in flight
  bool stream_active_ = false, request_done_ = true, sse_started_ = false;
  uint64_t generation_ = 0;
  std::atomic<bool> pump_posted_{false};
  std::vector<ApiChoice> choices_;
  std::vector<bool> first_;
  std::vector<int64_t> offsets_;
  std::optional<http::response<http::empty_body>> sse_res_;
  std::optional<http::response_serializer<http::empty_body>> sse_sr_;
  std::deque<Out> out_;
  bool writing_ = false;
  std::shared_ptr<std::array<char, 16384>> discard_;
};

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (!accepting) return;
    if (ec) {
      if (ec == net::error::operation_aborted) return;
      // Out of file descriptors, say: keep the listener, try again shortly.
      std::fprintf(stderr, "[http] accept failed: %s\n", ec.message().c_str());
      auto t = std::make_shared<net::steady_timer>(ioc, std::chrono::milliseconds(50));
      return t->async_wait([this, t](beast::error_code) { Accept(); });
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<Session>(std::move(socket), *this)->Start();
    Accept();
  });
}

template <typename F>
void HttpServer::Impl::ForEachSession(F f) {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lock(sessions_mu);
    for (auto& [p, w] : sessions) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->Post(f);
}

HttpServer::HttpServer(EngineService& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

HttpServer::~HttpServer() { Stop(std::chrono::milliseconds(0)); }

absl::Status HttpServer::Start() {
  RaiseOpenFileLimit();
  Impl& m = *impl_;
  beast::error_code ec;
  const auto address = net::ip::make_address(m.options.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrFormat("--host %s is not an IP address", m.options.host));
  const tcp::endpoint ep(address, static_cast<uint16_t>(m.options.port));
  m.acceptor.open(ep.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(ep, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrFormat("cannot listen on %s:%d (%s)", m.options.host, m.options.port,
                                                  ec.message()));
  }
  port_ = m.acceptor.local_endpoint().port();
  m.Accept();
  for (int i = 0; i < std::max(1, m.options.io_threads); ++i) m.threads.emplace_back([&m] { m.ioc.run(); });
  return absl::OkStatus();
}

void HttpServer::StopAccepting() {
  Impl& m = *impl_;
  if (!m.accepting.exchange(false)) return;
  net::post(m.acceptor.get_executor(), [&m] {
    beast::error_code ec;
    m.acceptor.close(ec);
  });
}

void HttpServer::Stop(std::chrono::milliseconds grace) {
  Impl& m = *impl_;
  if (m.threads.empty()) return;
  StopAccepting();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (m.busy_connections > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  m.ForEachSession([](Session& s) { s.Close(); });
  m.ioc.stop();
  for (std::thread& t : m.threads) t.join();
  m.threads.clear();
}

}  // namespace kvs
