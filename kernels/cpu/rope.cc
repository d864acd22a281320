#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {

void RopeF32(float* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
             const int32_t* positions, const float* inv_freq) {
  const int32_t half = head_dim / 2;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < num_tokens; ++t) {
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
}

}  // namespace kvs::cpu
