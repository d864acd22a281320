#include "runtime/sched/request.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace kvs {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature) || temperature > 100.0f) {
    return absl::InvalidArgumentError(absl::StrFormat("temperature must be in [0, 100], got %g", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrFormat("top_k must be >= 0, got %d", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrFormat("top_p must be in (0, 1], got %g", top_p));
  }
  if (n < 1 || n > 128) return absl::InvalidArgumentError(absl::StrFormat("n must be in 1..128, got %d", n));
  if (max_tokens <= 0) return absl::InvalidArgumentError(absl::StrFormat("max_tokens must be >= 1, got %d", max_tokens));
  if (logprobs < -1 || logprobs > 20) {
    return absl::InvalidArgumentError(absl::StrFormat("logprobs must be in 0..20, got %d", logprobs));
  }
  for (const auto& s : stop) {
    if (s.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
  }
  return absl::OkStatus();
}

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAborted: return "abort";
  }
  return "?";
}

}  // namespace kvs
