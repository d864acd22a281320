#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/common/status_macros.h"
#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kv_codec.h"

namespace kvs::cpu {
namespace {

constexpr int32_t kMaxHeadDim = 512;

// One query row of one head against keys [0, last_pos] of its sequence (the last cache.window of
// them in a windowed layer), read position by position (KvRowReader: the block table, decoded
// from the cache's format one row at a time, no full-precision copy). Online softmax (running max
// and sum) so no score buffer is needed.
void AttendOne(const float* q, int32_t last_pos, const KvRowReader& reader, const PagedKvView& cache, float scale,
               float* out) {
  const int32_t dim = cache.head_dim;
  float acc[kMaxHeadDim] = {};
  float key_buf[kMaxHeadDim], value_buf[kMaxHeadDim];
  float running_max = -std::numeric_limits<float>::infinity();
  float running_sum = 0.0f;
  const int32_t first = cache.window > 0 ? std::max(0, last_pos - cache.window + 1) : 0;
  for (int32_t pos = first; pos <= last_pos; ++pos) {
    const float* key;
    const float* value;
    reader.Read(pos, key_buf, value_buf, key, value);
    float score = 0.0f;
#pragma omp simd reduction(+ : score)
    for (int32_t d = 0; d < dim; ++d) score += q[d] * key[d];
    score *= scale;
    const float new_max = std::max(running_max, score);
    // exp(0) is exactly 1: only a new maximum costs an exponential (0 on the first key).
    const float correction = new_max == running_max ? 1.0f : std::exp(running_max - new_max);
    const float weight = std::exp(score - new_max);
    running_sum = running_sum * correction + weight;
    for (int32_t d = 0; d < dim; ++d) acc[d] = acc[d] * correction + weight * value[d];
    running_max = new_max;
  }
  for (int32_t d = 0; d < dim; ++d) out[d] = acc[d] / running_sum;
}

}  // namespace

void PagedAttentionF32(const float* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                       const AttentionBatch& batch, float scale, float* out, int64_t out_stride) {
  KVS_CHECK(cache.head_dim <= kMaxHeadDim);
  KVS_CHECK(q_heads % cache.kv_heads == 0);
  const int32_t group = q_heads / cache.kv_heads;
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const int32_t begin = batch.query_start[s];
    const int32_t end = batch.query_start[s + 1];
    const int32_t first_pos = batch.context_len[s] - (end - begin);
    KVS_CHECK_MSG(first_pos >= 0, "more queries than context tokens");
    // One item per (query row, head); an item's work is its context length times head_dim.
    const int64_t items = static_cast<int64_t>(end - begin) * q_heads;
    const int64_t work = static_cast<int64_t>(batch.context_len[s]) * cache.head_dim;
    ParallelFor(items, kParallelWork / std::max<int64_t>(work, 1), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int32_t t = begin + static_cast<int32_t>(i / q_heads), h = static_cast<int32_t>(i % q_heads);
        const int64_t col = static_cast<int64_t>(h) * cache.head_dim;
        const KvRowReader reader(cache, batch, s, h / group);
        AttendOne(q + t * q_stride + col, first_pos + (t - begin), reader, cache, scale, out + t * out_stride + col);
      }
    });
  }
}

}  // namespace kvs::cpu
