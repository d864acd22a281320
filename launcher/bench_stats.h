// Pieces the benchmarks and generate's latency summary share: ShareGPT-like request lengths and
// percentiles.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace kvs {

// ShareGPT's mean prompt and output lengths in tokens (as reported in the vLLM paper).
constexpr double kShareGptMeanPrompt = 161.3;
constexpr double kShareGptMeanOutput = 338.0;

// A length from a log-normal with sigma 1 (ShareGPT's long tail) whose mean is `mean`; >= 1.
inline int32_t DrawLogNormalLength(std::mt19937& rng, double mean) {
  std::lognormal_distribution<double> d(std::log(mean) - 0.5, 1.0);
  return std::max<int32_t>(1, static_cast<int32_t>(d(rng)));
}

// The p-th percentile (p in [0, 100]) by nearest rank; 0 for no samples.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5))];
}

}  // namespace kvs
