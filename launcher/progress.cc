#include "launcher/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kvs {

Progress::Progress(std::string tag, int64_t total_requests, double interval_s)
    : tag_(std::move(tag)), total_(total_requests), tty_(isatty(STDERR_FILENO) == 1), interval_s_(interval_s),
      start_(Clock::now()), last_draw_(start_) {}

void Progress::Update(int64_t done, int64_t tokens) {
  const double since = std::chrono::duration<double>(Clock::now() - last_draw_).count();
  if (since >= (tty_ ? 0.2 : interval_s_)) Draw(done, tokens, false);
}

void Progress::Finish(int64_t done, int64_t tokens) { Draw(done, tokens, true); }

void Progress::Draw(int64_t done, int64_t tokens, bool final) {
  last_draw_ = Clock::now();
  const double elapsed = std::chrono::duration<double>(last_draw_ - start_).count();
  const double rate = tokens / std::max(elapsed, 1e-9);
  const double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  const double eta = done > 0 ? elapsed * (total_ - done) / done : 0.0;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '=');
    if (filled < kWidth) bar += '>' + std::string(kWidth - filled - 1, ' ');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld requests | %lld tokens | %.1f tok/s | %.0f s elapsed, ETA %.0f s ",
                 tag_.c_str(), bar.c_str(), static_cast<long long>(done), static_cast<long long>(total_),
                 static_cast<long long>(tokens), rate, elapsed, eta);
    if (final) std::fputc('\n', stderr);
  } else {
    std::fprintf(stderr, "%s progress: %lld/%lld requests (%.0f%%), %lld tokens, %.1f tok/s, %.0f s elapsed\n",
                 tag_.c_str(), static_cast<long long>(done), static_cast<long long>(total_), 100.0 * frac,
                 static_cast<long long>(tokens), rate, elapsed);
  }
  std::fflush(stderr);
}

}  // namespace kvs
