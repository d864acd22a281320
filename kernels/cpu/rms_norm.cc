#include <algorithm>
#include <cmath>

#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {

void RmsNormF32(const float* x, int64_t x_stride, const float* weight, int64_t rows, int64_t cols,
                float eps, float* out, int64_t out_stride) {
  ParallelFor(rows, kParallelWork / std::max<int64_t>(cols, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * x_stride;
      double sum_sq = 0.0;  // double: the reference should not lose bits over 8K-wide rows
      for (int64_t c = 0; c < cols; ++c) sum_sq += static_cast<double>(xr[c]) * xr[c];
      const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / cols + eps));
      float* o = out + r * out_stride;
      for (int64_t c = 0; c < cols; ++c) o[c] = xr[c] * inv_rms * weight[c];
    }
  });
}

}  // namespace kvs::cpu
