#include "kernels/common/sampling.h"

#include <algorithm>
#include <cmath>

#include "kernels/common/status_macros.h"

namespace kvs::cpu {

int32_t SampleToken(std::span<const float> logits, const SampleOptions& opt, float uniform,
                    std::vector<std::pair<float, int32_t>>& scratch) {
  KVS_CHECK(!logits.empty());
  if (opt.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  scratch.clear();
  for (size_t i = 0; i < logits.size(); ++i) scratch.emplace_back(logits[i], static_cast<int32_t>(i));
  auto by_rank = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = scratch.size();
  if (opt.top_k > 0 && static_cast<size_t>(opt.top_k) < keep) {
    keep = opt.top_k;
    std::partial_sort(scratch.begin(), scratch.begin() + keep, scratch.end(), by_rank);
  } else {
    std::sort(scratch.begin(), scratch.end(), by_rank);
  }
  // Weights relative to the maximum ([0] after ranking), in float as the GPU computes them.
  const float max_logit = scratch[0].first;
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    scratch[i].first = std::exp((scratch[i].first - max_logit) / opt.temperature);
    total += scratch[i].first;
  }
  if (opt.top_p < 1.0f) {
    const double reach = static_cast<double>(opt.top_p) * total;
    double cumulative = 0.0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += scratch[i].first;
      if (cumulative >= reach) {
        keep = i + 1;
        break;
      }
    }
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += scratch[i].first;
  }
  std::sort(scratch.begin(), scratch.begin() + keep, [](const auto& a, const auto& b) { return a.second < b.second; });
  double target = static_cast<double>(uniform) * total;
  for (size_t i = 0; i < keep; ++i) {
    target -= scratch[i].first;
    if (target < 0.0) return scratch[i].second;
  }
  return scratch[keep - 1].second;
}

}  // namespace kvs::cpu
