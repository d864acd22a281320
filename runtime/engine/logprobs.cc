#include "runtime/engine/logprobs.h"

#include <algorithm>
#include <cmath>

#include "kernels/common/status_macros.h"

namespace kvs {

TokenLogprob ComputeLogprob(std::span<const float> logits, int32_t token, int32_t top_n) {
  KVS_CHECK(token >= 0 && static_cast<size_t>(token) < logits.size());
  KVS_CHECK(top_n >= 0 && top_n <= kMaxTopLogprobs);
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - mx);
  const double log_z = mx + std::log(sum);
  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(logits[token] - log_z);
  // The top_n best in one pass, kept sorted (top_n <= 20): no vocabulary-sized scratch per token.
  // Scanning ids upward and inserting only strictly better logits keeps ties on the lower id.
  std::vector<int32_t> best;
  best.reserve(top_n + 1);
  for (int32_t id = 0; top_n > 0 && id < static_cast<int32_t>(logits.size()); ++id) {
    if (static_cast<int32_t>(best.size()) == top_n && logits[id] <= logits[best.back()]) continue;
    auto at = std::upper_bound(best.begin(), best.end(), id, [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    best.insert(at, id);
    if (static_cast<int32_t>(best.size()) > top_n) best.pop_back();
  }
  for (int32_t id : best) out.top.emplace_back(id, static_cast<float>(logits[id] - log_z));
  return out;
}

}  // namespace kvs
