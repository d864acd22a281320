// Progress of an offline batch on stderr: a bar redrawn in place on a terminal, or a plain
// line every `interval` seconds when stderr is a file or pipe (logs stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvs {

class Progress {
 public:
  Progress(std::string tag, int64_t total_requests, double interval_s = 10.0);
  // Call after each step; draws when due.
  void Update(int64_t done_requests, int64_t generated_tokens);
  // Final draw and newline.
  void Finish(int64_t done_requests, int64_t generated_tokens);

 private:
  void Draw(int64_t done, int64_t tokens, bool final);
  using Clock = std::chrono::steady_clock;
  std::string tag_;
  int64_t total_;
  bool tty_;
  double interval_s_;
  Clock::time_point start_, last_draw_;
};

}  // namespace kvs
