#include <algorithm>
#include <cmath>

#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {

void RopeF32(float* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
             const int32_t* positions, const float* inv_freq) {
  const int32_t half = head_dim / 2;
  const int64_t per_token = static_cast<int64_t>(heads) * head_dim;
  ParallelFor(num_tokens, kParallelWork / std::max<int64_t>(per_token, 1), [&](int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    // The angle is a float32 product, as in HF transformers, so both agree at long positions.
    const float pos = static_cast<float>(positions[t]);
    for (int32_t h = 0; h < heads; ++h) {
      float* xh = x + t * x_stride + static_cast<int64_t>(h) * head_dim;
      for (int32_t d = 0; d < half; ++d) {
        const float angle = pos * inv_freq[d];
        const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
        const float s = static_cast<float>(std::sin(static_cast<double>(angle)));
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
