#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {
namespace {

// The rotation's cos and sin for each (token, frequency) of a call, kept for the next calls with
// the same positions and frequencies. A step rotates Q and K of every layer at the same positions,
// so it needs its angles once per frequency set, not once per head, matrix and layer: computed per
// head (12 heads x 32 double-precision sincos x 30 layers a SmolLM2 token) rope was 1.45% of a
// one-core decode step's samples (perf), now 0.09%. Two entries, because Gemma 3's local and global layers alternate
// between two frequency sets. The values are the same float(cos(double(angle))) either way. Per calling thread.
struct AngleTable {
  std::vector<float> inv_freq;
  std::vector<int32_t> positions;
  std::vector<float> cos_sin;  // token t: cos of its `half` angles, then their sin
  bool Holds(int64_t num_tokens, int32_t half, const int32_t* pos, const float* freq) const {
    return static_cast<int64_t>(positions.size()) == num_tokens && static_cast<int32_t>(inv_freq.size()) == half &&
           std::memcmp(positions.data(), pos, num_tokens * sizeof(int32_t)) == 0 &&
           std::memcmp(inv_freq.data(), freq, half * sizeof(float)) == 0;
  }
};

const float* Angles(int64_t num_tokens, int32_t half, const int32_t* positions, const float* inv_freq) {
  thread_local AngleTable tables[2];
  thread_local int next = 0;
  for (const AngleTable& t : tables) {
    if (t.Holds(num_tokens, half, positions, inv_freq)) return t.cos_sin.data();
  }
  AngleTable& t = tables[next];
  next ^= 1;
  t.inv_freq.assign(inv_freq, inv_freq + half);
  t.positions.assign(positions, positions + num_tokens);
  t.cos_sin.resize(static_cast<size_t>(num_tokens) * 2 * half);
  float* cs = t.cos_sin.data();
  ParallelFor(num_tokens, std::max<int64_t>(1, kParallelWork / 64 / std::max(half, 1)), [&](int64_t t0, int64_t t1) {
    for (int64_t tok = t0; tok < t1; ++tok) {
      // The angle is a float32 product, as in HF transformers, so both agree at long positions.
      const float pos = static_cast<float>(positions[tok]);
      float* c = cs + tok * 2 * half;
      for (int32_t d = 0; d < half; ++d) {
        const double angle = static_cast<double>(pos * inv_freq[d]);
        c[d] = static_cast<float>(std::cos(angle));
        c[half + d] = static_cast<float>(std::sin(angle));
      }
    }
  });
  return cs;
}

}  // namespace

void RopeF32(float* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
             const int32_t* positions, const float* inv_freq) {
  if (num_tokens <= 0) return;
  const int32_t half = head_dim / 2;
  const int64_t per_token = static_cast<int64_t>(heads) * head_dim;
  const float* cos_sin = Angles(num_tokens, half, positions, inv_freq);
  ParallelFor(num_tokens, kParallelWork / std::max<int64_t>(per_token, 1), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* cs = cos_sin + t * 2 * half;
      for (int32_t h = 0; h < heads; ++h) {
        float* xh = x + t * x_stride + static_cast<int64_t>(h) * head_dim;
        for (int32_t d = 0; d < half; ++d) {
          const float c = cs[d], s = cs[half + d];
          const float a = xh[d];
          const float b = xh[d + half];
          xh[d] = a * c - b * s;
          xh[d + half] = b * c + a * s;
        }
      }
    }
  });
}

}  // namespace kvs::cpu
