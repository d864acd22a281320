// A generation request and the parameters users set on it (validated at the boundary).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kvs {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;
  uint64_t seed = 0;
  int32_t max_tokens = 128;
  std::vector<std::string> stop;  // stop strings; the output ends before the first one
  bool ignore_eos = false;
  int32_t n = 1;  // samples per prompt: the prompt is computed once and its blocks shared
  // Log-probabilities of the sampled tokens: -1 none; k >= 0 the token's and the k most likely
  // tokens' (k <= 20; runtime/engine/logprobs.h).
  int32_t logprobs = -1;

  // InvalidArgument naming the field for out-of-range values.
  absl::Status Validate() const;
};

struct Request {
  std::string id;
  std::vector<int32_t> prompt_ids;
  SamplingParams params;
  int32_t priority = 0;  // higher is admitted first; equal priorities are first come, first served
};

enum class FinishReason { kNone, kStop, kLength, kAborted };
const char* FinishReasonName(FinishReason r);

}  // namespace kvs
