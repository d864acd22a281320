#include "runtime/engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

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
  if (top_n > 0) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const auto n = std::min<size_t>(top_n, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    for (size_t i = 0; i < n; ++i) out.top.emplace_back(ids[i], static_cast<float>(logits[ids[i]] - log_z));
  }
  return out;
}

}  // namespace kvs
