#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/common/status_macros.h"

namespace kvs::cpu {

void EmbeddingF32(const int32_t* ids, int64_t num_tokens, const float* table, int32_t first_id,
                  int64_t rows, int64_t hidden, float* out, int64_t out_stride) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t row = static_cast<int64_t>(ids[t]) - first_id;
    float* dst = out + t * out_stride;
    if (row >= 0 && row < rows) {
      std::memcpy(dst, table + row * hidden, hidden * sizeof(float));
    } else {
      std::memset(dst, 0, hidden * sizeof(float));  // another rank holds this id's row
    }
  }
}

}  // namespace kvs::cpu
