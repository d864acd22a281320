// The one rule by which the CUDA tests compare a GPU output with the CPU reference: element by
// element, |got - want| <= abs + rel * |want| everywhere (a NaN fails), the first failing element
// named with its index and the test's random seed, and the worst element's share of its tolerance
// returned for the log (how close the kernel runs to its bound, not only whether it passed).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "gtest/gtest.h"

namespace kvs::testing {

// Attention over a prefill chunk (bf16 operands and P, f32 accumulation, bf16 output; quantized
// codes become fp16 values, code x scale rounded once more, ~5e-4 relative), inputs ~N(0, 1):
// |gpu - cpu| <= kPrefillAbs + kPrefillRel * |cpu|. A swizzle, mask, decode or indexing bug is off
// by O(0.1-1). An absolute floor, not one relative to the output's RMS: a causal chunk's early rows
// average few keys (large outputs) and its late rows thousands (small ones), so the RMS says little
// about the late rows' rounding.
inline constexpr double kPrefillAbs = 4e-3, kPrefillRel = 2e-2;

inline double ExpectElementwise(std::span<const float> got, std::span<const float> want, double abs, double rel,
                                const std::string& what, uint32_t seed) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double tol = abs + rel * std::fabs(want[i]);
    const double share =
        std::isnan(got[i]) ? std::numeric_limits<double>::infinity() : std::fabs(got[i] - want[i]) / tol;
    if (share > 1 && worst <= 1) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", the CPU says " << want[i] << " (seed "
                    << seed << ")";
    }
    worst = std::max(worst, share);
  }
  return worst;
}

// At a tolerance of `rel` times (the output's RMS + the element's size): bf16 rounding of an output
// is relative to its scale, and a cancelling sum may land near zero.
inline double ExpectClose(std::span<const float> got, std::span<const float> want, double rel, const std::string& what,
                          uint32_t seed) {
  double ss = 0;
  for (float v : want) ss += static_cast<double>(v) * v;
  const double rms = std::sqrt(ss / std::max<size_t>(want.size(), 1));
  return ExpectElementwise(got, want, rel * rms, rel, what, seed);
}

}  // namespace kvs::testing
