// Log-probabilities of sampled tokens (OpenAI's `logprobs`): the chosen token's and the most
// likely alternatives', from the step's logits row — the model's own distribution (log-softmax of
// the raw logits, before temperature / top-k / top-p), as vLLM and OpenAI report it.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace kvs {

inline constexpr int32_t kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // the `top_n` most likely tokens, most likely first
};

// `logits` is one vocabulary row; 0 <= top_n <= kMaxTopLogprobs; ties go to the lower id.
TokenLogprob ComputeLogprob(std::span<const float> logits, int32_t token, int32_t top_n);

}  // namespace kvs
