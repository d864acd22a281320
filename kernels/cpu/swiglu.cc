#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {

void SwiGluF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
               int64_t out_stride) {
  ParallelFor(rows, kParallelWork / std::max<int64_t>(inter, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = gate_up + r * gu_stride;
      const float* up = gate + inter;
      float* o = out + r * out_stride;
      for (int64_t i = 0; i < inter; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
  });
}

void GeluGluF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
                int64_t out_stride) {
  const float k = std::sqrt(2.0f / std::numbers::pi_v<float>);
  ParallelFor(rows, kParallelWork / std::max<int64_t>(inter, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = gate_up + r * gu_stride;
      const float* up = gate + inter;
      float* o = out + r * out_stride;
      for (int64_t i = 0; i < inter; ++i) {
        const float x = gate[i];
        o[i] = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))) * up[i];
      }
    }
  });
}

}  // namespace kvs::cpu
