// The fast CPU backend's paged attention: the reference's math (float32, online softmax, the
// cache decoded by the same codec) over query tiles, so that a prefill chunk decodes each key and
// value once for a tile's rows rather than once per row and head. A tile is up to kTileQueries
// consecutive queries of one sequence times the query heads of one KV head (GQA group); the
// tiles run on the thread pool. The loops are compiled for AVX2+FMA as well as the baseline and
// picked at run time.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/common/status_macros.h"
#include "kernels/common/thread_pool.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kv_codec.h"

namespace kvs::cpu {
namespace {

constexpr int32_t kTileQueries = 16;  // query positions per tile
constexpr int32_t kChunkKeys = 64;    // keys decoded at a time
constexpr int32_t kMaxRows = kTileQueries * 64;  // GQA groups up to 64

struct TileJob {
  int32_t rows = 0, kv_head = 0, lo = 0, hi = 0;
  const KvRowReader* reader = nullptr;  // the sequence's keys and values for kv_head
  int32_t pos[kMaxRows];
  const float* q[kMaxRows];
  float* out[kMaxRows];
};

struct TileScratch {
  std::vector<float> keys, values, scores, out, max, sum;
  void Size(int32_t dim) {
    keys.resize(static_cast<size_t>(kChunkKeys) * dim);
    values.resize(static_cast<size_t>(kChunkKeys) * dim);
    scores.resize(kChunkKeys);
    out.resize(static_cast<size_t>(kMaxRows) * dim);
    max.resize(kMaxRows);
    sum.resize(kMaxRows);
  }
};

// The softmax's weights of a chunk: v[j] = exp(v[j] - shift) for j in [begin, end). The AVX2
// form works in whole vectors of 8 within kChunkKeys (the lanes outside the range are computed and
// not read), so that a key's weight is the same whichever keys share its vector.
namespace portable {
inline void ExpShifted(float* v, int32_t begin, int32_t end, float shift) {
  for (int32_t j = begin; j < end; ++j) v[j] = std::exp(v[j] - shift);
}
#include "kernels/cpu/attention_tile_rows.inc"
inline void Scores(const float* q, const float* const* keys, int32_t first, int32_t last, int32_t dim, float scale,
                   float* scores) {
  ScoresRows(q, keys, first, last, dim, scale, scores);
}
inline void Accumulate(float* o, float correction, const float* weights, const float* const* values, int32_t first,
                       int32_t last, int32_t dim) {
  AccumulateRows(o, correction, weights, values, first, last, dim);
}
#include "kernels/cpu/attention_tile.inc"
}  // namespace portable

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
// exp(x) for x <= 0 (a score minus the running maximum): 2^n * p(r), n = round(x / ln 2), r = x - n
// ln 2 in two parts, p the degree-6 Taylor polynomial (relative error under 2e-7); x below -87 is
// clamped there (its weight ~1e-38 where a float would underflow).
inline void ExpShifted(float* v, int32_t begin, int32_t end, float shift) {
  static_assert(kChunkKeys % 8 == 0);
  const __m256 s = _mm256_set1_ps(shift), lo = _mm256_set1_ps(-87.0f), log2e = _mm256_set1_ps(1.44269504f);
  const __m256 ln2_hi = _mm256_set1_ps(0.693145752f), ln2_lo = _mm256_set1_ps(1.42860677e-6f);
  for (int32_t j = begin & ~7; j < end; j += 8) {
    const __m256 x = _mm256_max_ps(_mm256_sub_ps(_mm256_loadu_ps(v + j), s), lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(n, ln2_lo, _mm256_fnmadd_ps(n, ln2_hi, x));
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    _mm256_storeu_ps(v + j, _mm256_mul_ps(p, _mm256_castsi256_ps(two_n)));
  }
}
#include "kernels/cpu/attention_tile_rows.inc"

// Four keys' scores at a time: one load of q per 8 dimensions for four keys, and the four dots'
// horizontal sums in one shuffle tree. Each key's sum takes the same operations in whatever slot
// (a short last group repeats its last key), so a score does not depend on its neighbours.
inline void Scores(const float* q, const float* const* keys, int32_t first, int32_t last, int32_t dim, float scale,
                   float* scores) {
  if (dim % 8 != 0) return ScoresRows(q, keys, first, last, dim, scale, scores);
  for (int32_t j = first; j <= last; j += 4) {
    const float* k0 = keys[j];
    const float* k1 = keys[std::min(j + 1, last)];
    const float* k2 = keys[std::min(j + 2, last)];
    const float* k3 = keys[std::min(j + 3, last)];
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int32_t d = 0; d < dim; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
    }
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    const __m128 sum = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    alignas(16) float out[4];
    _mm_store_ps(out, _mm_mul_ps(sum, _mm_set1_ps(scale)));
    for (int32_t i = 0; i < 4 && j + i <= last; ++i) scores[j + i] = out[i];
  }
}

// The output row 64 dimensions at a time in eight registers across the chunk's values (one load
// and one store of the row per chunk, not per value).
inline void Accumulate(float* o, float correction, const float* weights, const float* const* values, int32_t first,
                       int32_t last, int32_t dim) {
  if (dim % 64 != 0) return AccumulateRows(o, correction, weights, values, first, last, dim);
  const __m256 c = _mm256_set1_ps(correction);
  for (int32_t d0 = 0; d0 < dim; d0 += 64) {
    __m256 acc[8];
    const __m256 w0 = _mm256_set1_ps(weights[first]);
    for (int i = 0; i < 8; ++i) {
      acc[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(values[first] + d0 + 8 * i),
                               _mm256_mul_ps(_mm256_loadu_ps(o + d0 + 8 * i), c));
    }
    for (int32_t j = first + 1; j <= last; ++j) {
      const __m256 wj = _mm256_set1_ps(weights[j]);
      const float* v = values[j] + d0;
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(wj, _mm256_loadu_ps(v + 8 * i), acc[i]);
    }
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(o + d0 + 8 * i, acc[i]);
  }
}
#include "kernels/cpu/attention_tile.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

using TileFn = void (*)(const TileJob&, const PagedKvView&, float, TileScratch&);

TileFn PickTileFn() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2::AttendTile;
#endif
  return portable::AttendTile;
}

}  // namespace

void PagedAttentionTiledF32(const float* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                            const AttentionBatch& batch, float scale, float* out, int64_t out_stride) {
  KVS_CHECK(q_heads % cache.kv_heads == 0);
  const int32_t group = q_heads / cache.kv_heads;
  if (group > kMaxRows / kTileQueries) {  // GQA groups past 64 heads: the per-query walk
    PagedAttentionF32(q, q_stride, q_heads, cache, batch, scale, out, out_stride);
    return;
  }
  static const TileFn attend = PickTileFn();
  // Tiles: (sequence, KV head, kTileQueries queries), numbered in that order.
  std::vector<int64_t> first_tile(batch.num_seqs + 1, 0);
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const int32_t queries = batch.query_start[s + 1] - batch.query_start[s];
    first_tile[s + 1] = first_tile[s] + static_cast<int64_t>(cache.kv_heads) * ((queries + kTileQueries - 1) / kTileQueries);
  }
  const int64_t tiles = first_tile[batch.num_seqs];
  const int64_t work = std::max<int64_t>(1, static_cast<int64_t>(batch.max_context_len) * cache.head_dim * group);
  ParallelFor(tiles, std::max<int64_t>(1, kParallelWork / work), [&](int64_t t0, int64_t t1) {
    thread_local TileScratch scratch;
    scratch.Size(cache.head_dim);
    TileJob job;
    for (int64_t t = t0; t < t1; ++t) {
      const int32_t s = static_cast<int32_t>(std::upper_bound(first_tile.begin(), first_tile.end(), t) - first_tile.begin()) - 1;
      const int32_t begin = batch.query_start[s], queries = batch.query_start[s + 1] - begin;
      const int32_t per_head = (queries + kTileQueries - 1) / kTileQueries;
      const int64_t local = t - first_tile[s];
      job.kv_head = static_cast<int32_t>(local / per_head);
      const int32_t q0 = static_cast<int32_t>(local % per_head) * kTileQueries;
      const int32_t q1 = std::min(queries, q0 + kTileQueries);
      const int32_t first_pos = batch.context_len[s] - queries;
      KVS_CHECK_MSG(first_pos >= 0, "more queries than context tokens");
      const KvRowReader reader(cache, batch, s, job.kv_head);
      job.reader = &reader;
      job.rows = 0;
      for (int32_t i = q0; i < q1; ++i) {
        const int64_t t_row = begin + i;
        for (int32_t g = 0; g < group; ++g) {
          const int64_t col = static_cast<int64_t>(job.kv_head * group + g) * cache.head_dim;
          job.pos[job.rows] = first_pos + i;
          job.q[job.rows] = q + t_row * q_stride + col;
          job.out[job.rows] = out + t_row * out_stride + col;
          ++job.rows;
        }
      }
      job.hi = first_pos + q1 - 1;
      job.lo = cache.window > 0 ? std::max(0, first_pos + q0 - cache.window + 1) : 0;
      attend(job, cache, scale, scratch);
    }
  });
}

}  // namespace kvs::cpu
