#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace kvs::cpu {

void SwiGluF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
               int64_t out_stride) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * gu_stride;
    const float* up = gate + inter;
    float* o = out + r * out_stride;
    for (int64_t i = 0; i < inter; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

}  // namespace kvs::cpu
