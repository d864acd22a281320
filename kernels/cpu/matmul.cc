#include <algorithm>

#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {
namespace {

inline float Dot(const float* a, const float* b, int64_t k) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < k; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace

// Each thread owns a range of output features n; for every weight row it visits the tokens in
// tiles of kTokenTile so the row is read from L1/L2 rather than memory once per token.
void MatMulTransposedF32(const float* x, int64_t x_stride, const float* w, const float* bias,
                         int64_t rows, int64_t k, int64_t n, float* out, int64_t out_stride) {
  constexpr int64_t kTokenTile = 8;
  ParallelFor(n, std::max<int64_t>(1, kParallelWork / std::max<int64_t>(k * rows, 1)), [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* wj = w + j * k;
      const float b = bias ? bias[j] : 0.0f;
      for (int64_t t0 = 0; t0 < rows; t0 += kTokenTile) {
        const int64_t t1 = t0 + kTokenTile < rows ? t0 + kTokenTile : rows;
        for (int64_t t = t0; t < t1; ++t) out[t * out_stride + j] = Dot(x + t * x_stride, wj, k) + b;
      }
    }
  });
}

}  // namespace kvs::cpu
