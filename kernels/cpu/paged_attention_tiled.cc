// The fast CPU backend's paged attention: the reference's math (float32, online softmax, the
// cache decoded by the same codec) over query tiles, so that a prefill chunk decodes each key and
// value once for a tile's rows rather than once per row and head. A tile is up to kTileQueries
// consecutive queries of one sequence times the query heads of one KV head (GQA group); the
// tiles run on the thread pool, a decode's long key range in spans merged afterwards
// (kSplitKeys). The loops are compiled for AVX2+FMA as well as the baseline and picked at run
// time.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>
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
constexpr int32_t kRowBlock = 4;                 // rows scored and accumulated together
// A sequence whose queries fit one tile a KV head (decode, a short chunk) attends to more than
// kSplitKeys keys in spans of kSplitKeys from the range's start, run on the pool like tiles, each
// keeping its rows unnormalised with their max and sum, then merged in span order (flash-decoding).
// Otherwise a model with few KV heads decodes attention on as many threads as it has KV heads:
// Gemma 3 270M has one, and its 4,000-token decode steps took 4.3 ms more than short ones, on one
// of two threads. The rule reads the sequence alone, so outputs stay independent of the batch and
// of the thread count.
constexpr int32_t kSplitKeys = 512;
static_assert(kSplitKeys % kChunkKeys == 0);
// A split sequence's tile covers all its KV heads (up to kMaxTileHeads; heads x rows within
// kMaxRows), reading each token's rows of every head together: they are adjacent in the cache
// ([slot][kv_head][dim]), while one head's rows are a stride apart (128 of every 384 bytes for
// SmolLM2's fp16 cache), which memory serves at a fraction of its rate (a 4,096-token decode
// spent most of its time waiting on those loads). Each head's rows are computed as in a tile of
// their own, so the results are the same.
constexpr int32_t kMaxTileHeads = 8;

struct TileJob {
  // rows / heads rows for each of KV heads kv_head .. kv_head + heads - 1, head by head.
  int32_t rows = 0, kv_head = 0, heads = 1, lo = 0, hi = 0;
  const KvRowReader* reader = nullptr;  // the sequence's keys and values from kv_head on
  int32_t pos[kMaxRows];
  const float* q[kMaxRows];
  float* out[kMaxRows];
  // A span of a split tile: row r's unnormalised output, max and sum at partial + r * (dim + 2),
  // instead of its output.
  float* partial = nullptr;
};

struct TileScratch {
  std::vector<float> keys, values, keys_t, zero_key, scores, out, max, sum;
  void Size(int32_t dim, int32_t heads) {
    keys.resize(static_cast<size_t>(kChunkKeys) * dim * heads);
    values.resize(static_cast<size_t>(kChunkKeys) * dim * heads);
    keys_t.resize(static_cast<size_t>(kChunkKeys) * dim);  // [dim][kChunkKeys] (AVX2 PrepareKeys)
    zero_key.assign(dim, 0.0f);                            // stands for the keys past a chunk's last
    scores.resize(static_cast<size_t>(kRowBlock) * kChunkKeys);
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
inline float RangeMax(const float* v, int32_t first, int32_t last) {
  float m = -std::numeric_limits<float>::infinity();
  for (int32_t j = first; j <= last; ++j) m = std::max(m, v[j]);
  return m;
}
inline float RangeSum(const float* v, int32_t first, int32_t last) {
  float s = 0.0f;
  for (int32_t j = first; j <= last; ++j) s += v[j];
  return s;
}
#include "kernels/cpu/attention_tile_rows.inc"
// Keys k0 .. k0 + n - 1 of the tile's sequence for each of its `heads` KV heads: keys[h][j] and
// values[h][j] point at float rows, a cache block's run of rows at a time (one block-table lookup
// and one decoder call a run, not a key). One head's f32 rows are read in place; other formats'
// rows, and several heads' f32 rows, are decoded (copied) into the scratch in the cache's order,
// token by token: several heads' f32 rows read in place would be a stride apart again (copying
// them: a SmolLM2 decode step at 1,000 / 4,000 tokens 1.0-1.27x faster; one layer's attention
// alone, its cache in L3, 1.5x slower, which a step's 30 layers of cache never are).
template <bool kVector>
inline void ReadChunkRuns(const KvRowReader& reader, const PagedKvView& cache, int32_t k0, int32_t n, int32_t heads,
                          TileScratch& w, const float* (*keys)[kChunkKeys], const float* (*values)[kChunkKeys]) {
  const int32_t dim = cache.head_dim;
  if (!KvRowReader::RowsStoredPerToken(cache.dtype)) {  // channel-quantized keys and their residual ring
    KVS_CHECK(heads == 1);
    for (int32_t j = 0; j < n; ++j) {
      reader.Read(k0 + j, w.keys.data() + static_cast<size_t>(j) * dim, w.values.data() + static_cast<size_t>(j) * dim,
                  keys[0][j], values[0][j]);
    }
    return;
  }
  KVS_CHECK(heads == 1 || heads == cache.kv_heads);
  for (int32_t j = 0; j < n;) {
    const KvRowReader::StoredRun run = reader.Stored(k0 + j, n - j);
    if (cache.dtype == KvDType::kF32 && heads == 1) {  // stored as floats: read in place
      for (int32_t i = 0; i < run.count; ++i) {
        keys[0][j + i] = reinterpret_cast<const float*>(run.k + i * run.code_stride);
        values[0][j + i] = reinterpret_cast<const float*>(run.v + i * run.code_stride);
      }
      j += run.count;
      continue;
    }
    // The run is count x heads rows of the cache: heads is 1 or all of a token's KV heads, whose
    // rows fill the token's stride, so consecutive rows are a head's share of it apart.
    const int32_t rows = run.count * heads;
    const int64_t row_stride = run.code_stride / heads, scale_stride = run.scale_stride / heads;
    float* key = w.keys.data() + static_cast<size_t>(j) * heads * dim;
    float* value = w.values.data() + static_cast<size_t>(j) * heads * dim;
    if constexpr (kVector) {
      DecodeKvRowsVector(run.k, row_stride, run.k_scales, scale_stride, rows, cache.dtype, dim, key);
      DecodeKvRowsVector(run.v, row_stride, run.v_scales, scale_stride, rows, cache.dtype, dim, value);
    } else {
      for (int32_t r = 0; r < rows; ++r) {
        DecodeKvRow(run.k + r * row_stride, run.k_scales + r * scale_stride, cache.dtype, dim, key + r * dim);
        DecodeKvRow(run.v + r * row_stride, run.v_scales + r * scale_stride, cache.dtype, dim, value + r * dim);
      }
    }
    for (int32_t i = 0; i < run.count; ++i) {
      for (int32_t h = 0; h < heads; ++h) {
        keys[h][j + i] = key + static_cast<size_t>(i * heads + h) * dim;
        values[h][j + i] = value + static_cast<size_t>(i * heads + h) * dim;
      }
    }
    j += run.count;
  }
}
inline void ReadChunk(const KvRowReader& reader, const PagedKvView& cache, int32_t k0, int32_t n, int32_t heads,
                      TileScratch& w, const float* (*keys)[kChunkKeys], const float* (*values)[kChunkKeys]) {
  ReadChunkRuns<false>(reader, cache, k0, n, heads, w, keys, values);
}
inline bool PrepareKeys(const float* const*, int32_t, int32_t, int32_t, TileScratch&) { return false; }
inline void ScoreBlock(const float* const* q, int32_t rows, const float* const* keys, bool, int32_t lo, int32_t hi,
                       int32_t dim, float scale, TileScratch&, float* scores) {
  ScoreBlockRows(q, rows, keys, lo, hi, dim, scale, scores);
}
inline void AccumulateBlock(float* o, int32_t rows, const float* correction, const float* weights,
                            const float* const* values, int32_t lo, int32_t hi, int32_t dim) {
  AccumulateBlockRows(o, rows, correction, weights, values, lo, hi, dim);
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

// The lanes of the vector of 8 at j (a multiple of 8) that lie in [first, last].
inline __m256 LanesIn(int32_t j, int32_t first, int32_t last) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(first), idx),
                                         _mm256_cmpgt_epi32(_mm256_set1_epi32(last + 1), idx));
  return _mm256_castsi256_ps(in);
}

// A row's maximum and sum over [first, last] in whole vectors (kChunkKeys is a multiple of 8), the
// lanes outside masked: 8 running lanes, then one fixed reduction tree, so each depends on the
// row's own values alone.
#include "kernels/cpu/horizontal_x86.inc"
inline float RangeMax(const float* v, int32_t first, int32_t last) {
  const __m256 none = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 m = none;
  for (int32_t j = first & ~7; j <= last; j += 8) {
    m = _mm256_max_ps(m, _mm256_blendv_ps(none, _mm256_loadu_ps(v + j), LanesIn(j, first, last)));
  }
  return HorizontalMax(m);
}
inline float RangeSum(const float* v, int32_t first, int32_t last) {
  __m256 s = _mm256_setzero_ps();
  for (int32_t j = first & ~7; j <= last; j += 8) {
    s = _mm256_add_ps(s, _mm256_and_ps(_mm256_loadu_ps(v + j), LanesIn(j, first, last)));
  }
  return HorizontalSum(s);
}
#include "kernels/cpu/attention_tile_rows.inc"
// The chunk's rows decoded eight elements a vector (bit for bit the codec's floats).
inline void ReadChunk(const KvRowReader& reader, const PagedKvView& cache, int32_t k0, int32_t n, int32_t heads,
                      TileScratch& w, const float* (*keys)[kChunkKeys], const float* (*values)[kChunkKeys]) {
  portable::ReadChunkRuns<true>(reader, cache, k0, n, heads, w, keys, values);
}

// A row's scores four keys at a time (tiles of few rows, whose keys are not transposed): one load
// of q per 8 dimensions for four keys, and the four dots' horizontal sums in one shuffle tree.
// Each key's sum takes the same operations in whatever slot (a short last group repeats its last
// key), so a score does not depend on its neighbours.
inline void ScoresFourKeys(const float* q, const float* const* keys, int32_t first, int32_t last, int32_t dim,
                           float scale, float* scores) {
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

// Tiles of at least kTransposeMinRows rows (a prefill chunk's 16 queries times the GQA group; a
// decode of a group of 8 or more) score against the chunk's keys transposed, [dim][kChunkKeys]:
// a block's rows then take one load of 8 keys' elements and a broadcast of each row's query
// element per 8 keys, with no horizontal sums. The transposition costs a chunk's keys once, which
// a decode of 1-4 rows would not earn back.
constexpr int32_t kTransposeMinRows = 8;
// An 8x8 block of floats transposed: r[i] holds rows i, returns columns in r[i].
inline void Transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// The chunk's keys transposed 8x8 at a time; the lanes past its last key (scored as whole vectors,
// never read) hold zeros rather than whatever the scratch held, so that they stay finite.
inline bool PrepareKeys(const float* const* keys, int32_t n, int32_t dim, int32_t rows, TileScratch& w) {
  if (rows < kTransposeMinRows || dim % 8 != 0) return false;
  float* kt = w.keys_t.data();
  const float* zeros = w.zero_key.data();
  for (int32_t j = 0; j < n; j += 8) {
    const float* k[8];
    for (int i = 0; i < 8; ++i) k[i] = j + i < n ? keys[j + i] : zeros;
    for (int32_t d = 0; d < dim; d += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(k[i] + d);
      Transpose8x8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(kt + static_cast<size_t>(d + i) * kChunkKeys + j, r[i]);
    }
  }
  return true;
}

// R rows' scores over whole vectors of 8 keys covering [lo, hi], two vectors at a time: each lane
// sums its key's products over the dimensions in order, so a score does not depend on the keys or
// rows beside it.
template <int R>
inline void ScoreBlockTransposed(const float* const* q, const float* kt, int32_t lo, int32_t hi, int32_t dim,
                                 float scale, float* scores) {
  const __m256 s = _mm256_set1_ps(scale);
  for (int32_t j = lo & ~7; j <= hi; j += 16) {
    const bool two = j + 8 <= hi;
    __m256 a[R][2];
    for (int i = 0; i < R; ++i) a[i][0] = a[i][1] = _mm256_setzero_ps();
    for (int32_t d = 0; d < dim; ++d) {
      const float* row = kt + static_cast<size_t>(d) * kChunkKeys + j;
      const __m256 k0 = _mm256_loadu_ps(row);
      const __m256 k1 = two ? _mm256_loadu_ps(row + 8) : k0;
      for (int i = 0; i < R; ++i) {
        const __m256 qd = _mm256_broadcast_ss(q[i] + d);
        a[i][0] = _mm256_fmadd_ps(qd, k0, a[i][0]);
        a[i][1] = _mm256_fmadd_ps(qd, k1, a[i][1]);
      }
    }
    for (int i = 0; i < R; ++i) {
      _mm256_storeu_ps(scores + i * kChunkKeys + j, _mm256_mul_ps(a[i][0], s));
      if (two) _mm256_storeu_ps(scores + i * kChunkKeys + j + 8, _mm256_mul_ps(a[i][1], s));
    }
  }
}

inline void ScoreBlock(const float* const* q, int32_t rows, const float* const* keys, bool prepared, int32_t lo,
                       int32_t hi, int32_t dim, float scale, TileScratch& w, float* scores) {
  static_assert(kRowBlock == 4 && kChunkKeys % 8 == 0);
  if (!prepared) {
    if (dim % 8 != 0) return ScoreBlockRows(q, rows, keys, lo, hi, dim, scale, scores);
    for (int32_t i = 0; i < rows; ++i) ScoresFourKeys(q[i], keys, lo, hi, dim, scale, scores + i * kChunkKeys);
    return;
  }
  const float* kt = w.keys_t.data();
  switch (rows) {
    case 4: return ScoreBlockTransposed<4>(q, kt, lo, hi, dim, scale, scores);
    case 3: return ScoreBlockTransposed<3>(q, kt, lo, hi, dim, scale, scores);
    case 2: return ScoreBlockTransposed<2>(q, kt, lo, hi, dim, scale, scores);
    default: return ScoreBlockTransposed<1>(q, kt, lo, hi, dim, scale, scores);
  }
}

// R output rows 16 dimensions at a time in registers across the chunk's values: per value, two
// loads of it and a broadcast of each row's weight for 2R multiply-adds. The first step multiplies
// by each row's correction and adds the first value's product, as the row-at-a-time form does.
template <int R>
inline void AccumulateBlockT(float* o, const float* correction, const float* weights, const float* const* values,
                             int32_t lo, int32_t hi, int32_t dim) {
  for (int32_t d0 = 0; d0 < dim; d0 += 16) {
    __m256 acc[R][2];
    const __m256 v0 = _mm256_loadu_ps(values[lo] + d0), v1 = _mm256_loadu_ps(values[lo] + d0 + 8);
    for (int i = 0; i < R; ++i) {
      const float* oi = o + static_cast<size_t>(i) * dim + d0;
      const __m256 c = _mm256_set1_ps(correction[i]), wi = _mm256_set1_ps(weights[i * kChunkKeys + lo]);
      acc[i][0] = _mm256_fmadd_ps(wi, v0, _mm256_mul_ps(_mm256_loadu_ps(oi), c));
      acc[i][1] = _mm256_fmadd_ps(wi, v1, _mm256_mul_ps(_mm256_loadu_ps(oi + 8), c));
    }
    for (int32_t j = lo + 1; j <= hi; ++j) {
      const __m256 x0 = _mm256_loadu_ps(values[j] + d0), x1 = _mm256_loadu_ps(values[j] + d0 + 8);
      for (int i = 0; i < R; ++i) {
        const __m256 wi = _mm256_broadcast_ss(weights + i * kChunkKeys + j);
        acc[i][0] = _mm256_fmadd_ps(wi, x0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(wi, x1, acc[i][1]);
      }
    }
    for (int i = 0; i < R; ++i) {
      _mm256_storeu_ps(o + static_cast<size_t>(i) * dim + d0, acc[i][0]);
      _mm256_storeu_ps(o + static_cast<size_t>(i) * dim + d0 + 8, acc[i][1]);
    }
  }
}

inline void AccumulateBlock(float* o, int32_t rows, const float* correction, const float* weights,
                            const float* const* values, int32_t lo, int32_t hi, int32_t dim) {
  if (dim % 16 != 0) return AccumulateBlockRows(o, rows, correction, weights, values, lo, hi, dim);
  switch (rows) {
    case 4: return AccumulateBlockT<4>(o, correction, weights, values, lo, hi, dim);
    case 3: return AccumulateBlockT<3>(o, correction, weights, values, lo, hi, dim);
    case 2: return AccumulateBlockT<2>(o, correction, weights, values, lo, hi, dim);
    default: return AccumulateBlockT<1>(o, correction, weights, values, lo, hi, dim);
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
  const int32_t dim = cache.head_dim;
  // Tiles: (sequence, KV head, kTileQueries queries), numbered in that order, each with its key
  // range and, where it is split, its spans' place in `partials`.
  struct Tile {
    int32_t seq, kv_head, heads, q0, q1, lo, hi, spans;
    int64_t partial;  // floats into partials of its first span (split tiles)
  };
  int32_t max_heads = 1;
  std::vector<Tile> tiles;
  int64_t partial_floats = 0;
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const int32_t queries = batch.query_start[s + 1] - batch.query_start[s];
    const int32_t first_pos = batch.context_len[s] - queries;
    KVS_CHECK_MSG(first_pos >= 0, "more queries than context tokens");
    const int32_t lo = cache.window > 0 ? std::max(0, first_pos - cache.window + 1) : 0;
    const bool split = queries <= kTileQueries && first_pos + queries - lo > kSplitKeys;
    const int32_t heads = split && KvRowReader::RowsStoredPerToken(cache.dtype) && cache.kv_heads <= kMaxTileHeads &&
                                  queries * group * cache.kv_heads <= kMaxRows
                              ? cache.kv_heads
                              : 1;
    max_heads = std::max(max_heads, heads);
    for (int32_t h = 0; h < cache.kv_heads; h += heads) {
      for (int32_t q0 = 0; q0 < queries; q0 += kTileQueries) {
        const int32_t q1 = std::min(queries, q0 + kTileQueries);
        Tile t{s, h, heads, q0, q1, 0, first_pos + q1 - 1, 1, 0};
        t.lo = cache.window > 0 ? std::max(0, first_pos + q0 - cache.window + 1) : 0;
        if (split) {
          t.spans = (t.hi - t.lo + kSplitKeys) / kSplitKeys;
          t.partial = partial_floats;
          partial_floats += static_cast<int64_t>(t.spans) * (q1 - q0) * group * heads * (dim + 2);
        }
        tiles.push_back(t);
      }
    }
  }
  // Work units: a tile, or one span of a split tile.
  std::vector<std::pair<int32_t, int32_t>> units;  // (tile, span)
  for (size_t i = 0; i < tiles.size(); ++i) {
    for (int32_t sp = 0; sp < tiles[i].spans; ++sp) units.emplace_back(static_cast<int32_t>(i), sp);
  }
  // Every span writes all its rows before the merge reads them: a buffer kept between calls
  // (grown, never cleared) spares a step's layers an allocation each.
  thread_local std::vector<float> partial_buffer;
  if (static_cast<int64_t>(partial_buffer.size()) < partial_floats) partial_buffer.resize(partial_floats);
  float* const partials = partial_buffer.data();
  // The tile's rows: for each of its KV heads, (query, head of the group), their positions,
  // queries and outputs.
  auto fill_rows = [&](const Tile& t, TileJob& job) {
    const int32_t begin = batch.query_start[t.seq];
    const int32_t first_pos = batch.context_len[t.seq] - (batch.query_start[t.seq + 1] - begin);
    job.rows = 0;
    job.kv_head = t.kv_head;
    job.heads = t.heads;
    for (int32_t h = t.kv_head; h < t.kv_head + t.heads; ++h) {
      for (int32_t i = t.q0; i < t.q1; ++i) {
        const int64_t t_row = begin + i;
        for (int32_t g = 0; g < group; ++g) {
          const int64_t col = static_cast<int64_t>(h * group + g) * dim;
          job.pos[job.rows] = first_pos + i;
          job.q[job.rows] = q + t_row * q_stride + col;
          job.out[job.rows] = out + t_row * out_stride + col;
          ++job.rows;
        }
      }
    }
  };
  const int64_t span_keys = std::min<int64_t>(batch.max_context_len, kSplitKeys);
  const int64_t work = std::max<int64_t>(1, span_keys * dim * group);
  ParallelFor(static_cast<int64_t>(units.size()), std::max<int64_t>(1, kParallelWork / work),
              [&](int64_t u0, int64_t u1) {
                thread_local TileScratch scratch;
                scratch.Size(dim, max_heads);
                TileJob job;
                for (int64_t u = u0; u < u1; ++u) {
                  const Tile& t = tiles[units[u].first];
                  const int32_t span = units[u].second;
                  const KvRowReader reader(cache, batch, t.seq, t.kv_head);
                  job.reader = &reader;
                  fill_rows(t, job);
                  job.lo = t.lo;
                  job.hi = t.hi;
                  job.partial = nullptr;
                  if (t.spans > 1) {
                    job.lo = t.lo + span * kSplitKeys;
                    job.hi = std::min(t.hi, job.lo + kSplitKeys - 1);
                    job.partial = partials + t.partial + static_cast<int64_t>(span) * job.rows * (dim + 2);
                  }
                  attend(job, cache, scale, scratch);
                }
              });
  // The split tiles' spans merged in order: sum_s o_s e^(m_s - m) / sum_s l_s e^(m_s - m).
  std::vector<int32_t> split;
  for (size_t i = 0; i < tiles.size(); ++i) {
    if (tiles[i].spans > 1) split.push_back(static_cast<int32_t>(i));
  }
  ParallelFor(static_cast<int64_t>(split.size()), 1, [&](int64_t i0, int64_t i1) {
    TileJob job;
    std::vector<float> acc(dim);
    for (int64_t i = i0; i < i1; ++i) {
      const Tile& t = tiles[split[i]];
      fill_rows(t, job);
      const int64_t span_stride = static_cast<int64_t>(job.rows) * (dim + 2);
      for (int32_t r = 0; r < job.rows; ++r) {
        const float* first = partials + t.partial + static_cast<int64_t>(r) * (dim + 2);
        float m = -std::numeric_limits<float>::infinity();
        for (int32_t sp = 0; sp < t.spans; ++sp) m = std::max(m, first[sp * span_stride + dim]);
        float l = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int32_t sp = 0; sp < t.spans; ++sp) {
          const float* p = first + sp * span_stride;
          if (p[dim + 1] == 0.0f) continue;  // no key of this span is the row's
          const float c = std::exp(p[dim] - m);
          l += p[dim + 1] * c;
          for (int32_t d = 0; d < dim; ++d) acc[d] += p[d] * c;
        }
        const float inv = 1.0f / l;
        for (int32_t d = 0; d < dim; ++d) job.out[r][d] = acc[d] * inv;
      }
    }
  });
}

}  // namespace kvs::cpu
