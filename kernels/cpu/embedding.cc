#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/common/status_macros.h"

namespace kvs::cpu {

void EmbeddingF32(const int32_t* ids, int64_t num_tokens, const float* table, int64_t vocab,
                  int64_t hidden, float* out, int64_t out_stride) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    KVS_CHECK_MSG(ids[t] >= 0 && ids[t] < vocab, "token id outside the vocabulary");
    std::memcpy(out + t * out_stride, table + static_cast<int64_t>(ids[t]) * hidden,
                hidden * sizeof(float));
  }
}

}  // namespace kvs::cpu
