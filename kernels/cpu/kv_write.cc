#include "kernels/common/status_macros.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kv_codec.h"

namespace kvs::cpu {

void WriteKvF32(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                int64_t num_tokens, const int32_t* slot_mapping, const PagedKvView& cache) {
  auto* kc = static_cast<std::byte*>(cache.k);
  auto* vc = static_cast<std::byte*>(cache.v);
  const int32_t dim = cache.head_dim;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    KVS_CHECK_MSG(slot < cache.NumSlots(), "KV slot outside the cache");
    for (int32_t h = 0; h < cache.kv_heads; ++h) {
      const int64_t row = cache.RowOffset(slot, h), scales = cache.ScaleOffset(slot, h);
      EncodeKvRow(k + t * k_stride + h * dim, cache.dtype, dim, kc + row, kc + scales);
      EncodeKvRow(v + t * v_stride + h * dim, cache.dtype, dim, vc + row, vc + scales);
    }
  }
}

}  // namespace kvs::cpu
