#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/common/status_macros.h"

namespace kvs::cpu {

void WriteKvF32(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                int64_t num_tokens, const int32_t* slot_mapping, const PagedKvView& cache) {
  const int64_t width = cache.SlotStride();
  float* kc = static_cast<float*>(cache.k);
  float* vc = static_cast<float*>(cache.v);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    KVS_CHECK_MSG(slot < cache.NumSlots(), "KV slot outside the cache");
    std::memcpy(kc + slot * width, k + t * k_stride, width * sizeof(float));
    std::memcpy(vc + slot * width, v + t * v_stride, width * sizeof(float));
  }
}

}  // namespace kvs::cpu
