#include "kernels/cpu/block_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "kernels/common/ggml_decode.h"
#include "kernels/common/status_macros.h"
#include "kernels/common/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define KVS_X86 1
#endif

namespace kvs::cpu {
namespace {

// Activations quantize in blocks of 32; scales apply per 16 weights, and each int32 lane of the
// dot products sums 4 products, so the scales are kept repeated per lane of 4 ("x4" arrays).
constexpr int64_t kActBlock = 32;
constexpr int64_t kLane = 4;

// The tokens' activations as the tile kernels read them: q[t * k + e]; per block of 32 (u) the
// scale d[u * stride + t] and d * sum(q) in s[u * stride + t], per 16 (g) d * sum(q) in
// s16[g * stride + t] — block-major, so that a tile's tokens sit side by side.
struct ActivationView {
  const int8_t* q;
  const float* d;
  const float* s;
  const float* s16;
  int64_t k, stride;
};

// 32 bytes, 32-byte aligned: one unit's codes for one row (DecodedRows).
struct alignas(32) UnitCodesStorage {
  uint8_t bytes[32];
};

// A row of unpacked weights against one token (any block type): sum over lanes l of 4 of the
// int8 products, times ws4[l] * xd4[l].
using UnpackedDotFn = float (*)(const int8_t* wq, const float* ws4, const int8_t* xq, const float* xd4, int64_t k);

// R rows (R = 1 or 4) against T tokens (T = 1 or the kernel set's tile) from token t0:
// out[t * out_stride + r] = row r . token t0 + t + bias[r].
using TileDotFn = void (*)(const uint8_t* w, int64_t row_bytes, const ActivationView& a, int64_t t0, const float* bias,
                           float* out, int64_t out_stride);
// A prefill's group of wide_rows rows (a vector's int32 lanes), the first `rows` real, decoded once
// for many token tiles with their units' bytes interleaved by 4 (block_dot_x86.inc's
// DecodeRowsWide): the codes, 32 bytes a unit and row, and per unit (and half) the rows' scales and
// offsets.
struct DecodedRows {
  uint8_t* codes;
  float* scales;
  float* offsets;
};
using DecodeWideFn = void (*)(const uint8_t* w, int64_t row_bytes, int64_t k, int64_t rows, const DecodedRows& d);
using DecodedWideTileFn = void (*)(const DecodedRows& d, const ActivationView& a, int64_t t0, const float* bias,
                                   int64_t rows, float* out, int64_t out_stride);
struct TileKernels {
  TileDotFn fn[2][2];  // [4 rows][a whole tile of tokens]
  int tokens;          // tokens per tile
  // A prefill's groups, decoded once: the same bits as fn[1][1] for each real row.
  int wide_rows;  // 16 with AVX-512, 8 in 256 bits
  DecodeWideFn decode_wide;
  DecodedWideTileFn decoded_wide_tile;
};
// Token tiles from which a group of rows is decoded once rather than in every tile (prefill):
// below it (decode's one token, a few tokens) the tiles decode as they go.
constexpr int64_t kDecodeOnceTiles = 2;
constexpr int64_t kTileRows = 4;
// How far ahead a tile reading its rows from their blocks prefetches (block_dot_x86.inc's
// BlocksSource::Prefetch): whole 4-row tiles, at least kPrefetchBytes. SmolLM2's LM head decoded
// 2.4-3x faster on an AVX2 EPYC with 1, 2 or 4 of its 2,448-byte tiles ahead, 4 best.
constexpr int64_t kPrefetchBytes = 8192;
// Called once a tile on decode's path: a few additions rather than a 64-bit division (rows of a
// KiB or more need at most two tiles).
inline int64_t PrefetchAhead(int64_t row_bytes) {
  const int64_t tile = kTileRows * row_bytes;
  int64_t ahead = tile;
  while (tile > 0 && ahead < kPrefetchBytes) ahead += tile;
  return ahead;
}

// One token's activations, rounded to int8 per block of 32 (scale d = max|x| / 127): q[k]; per
// block b the scale d[b * stride] and d * sum(q) in s[b * stride], per 16 (g) d * sum(q) in
// s16[g * stride] (the offsets' sums: sum_e m * x_e = m * d * sum q); when xd4 is given, the
// scale repeated per lane of 4 (the unpacked path's layout).
void QuantizeActivations(const float* x, int64_t k, int8_t* q, float* d_out, float* s_out, float* s16_out,
                         int64_t stride, float* xd4) {
  for (int64_t b = 0; b < k / kActBlock; ++b) {
    const float* xb = x + b * kActBlock;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < kActBlock; ++i) {
      amax = std::max(amax, std::fabs(xb[i]));
      finite = finite && std::isfinite(xb[i]);
    }
    // NaN or Inf anywhere: the block's scale is NaN, so every output that reads it is NaN, as
    // in the reference.
    const float d = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
    int8_t* qb = q + b * kActBlock;
    for (int64_t i = 0; i < kActBlock; ++i) qb[i] = static_cast<int8_t>(std::nearbyint(xb[i] * inv));
    if (xd4 != nullptr) {
      for (int64_t l = 0; l < kActBlock / kLane; ++l) xd4[b * (kActBlock / kLane) + l] = d;
    }
    int32_t total = 0;
    for (int64_t g = 0; g < 2; ++g) {
      int32_t s = 0;
      for (int64_t i = 0; i < kUnpackGroup; ++i) s += qb[g * kUnpackGroup + i];
      s16_out[(2 * b + g) * stride] = d * static_cast<float>(s);
      total += s;
    }
    d_out[b * stride] = d;
    s_out[b * stride] = d * static_cast<float>(total);
  }
}

// Per CPU, a vector form of it with the same values.
using QuantizeFn = void (*)(const float* x, int64_t k, int8_t* q, float* d_out, float* s_out, float* s16_out,
                            int64_t stride, float* xd4);

float DotUnpackedPortable(const int8_t* wq, const float* ws4, const int8_t* xq, const float* xd4, int64_t k) {
  float acc = 0.0f;
  for (int64_t l = 0; l < k / kLane; ++l) {
    int32_t s = 0;
    for (int i = 0; i < kLane; ++i) s += static_cast<int32_t>(wq[kLane * l + i]) * xq[kLane * l + i];
    acc += static_cast<float>(s) * (ws4[l] * xd4[l]);
  }
  return acc;
}

#ifdef KVS_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#define KVS_DOT4(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#define KVS_VNNI 0
#define KVS_AVX512 0
#define KVS_TILE_TOKENS 2
#include "kernels/cpu/block_dot_x86.inc"
#undef KVS_DOT4
#undef KVS_VNNI
#undef KVS_AVX512
#undef KVS_TILE_TOKENS
}  // namespace avx2
#pragma GCC pop_options

// Ice Lake / Cascade Lake servers have VNNI only in its AVX-512 form (EVEX, here at 256 bits).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")
namespace avx512vnni {
#define KVS_DOT4(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#define KVS_VNNI 1
#define KVS_AVX512 1
#define KVS_TILE_TOKENS 4
#include "kernels/cpu/block_dot_x86.inc"
#undef KVS_DOT4
#undef KVS_VNNI
#undef KVS_AVX512
#undef KVS_TILE_TOKENS
}  // namespace avx512vnni
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
namespace avxvnni {
#define KVS_DOT4(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
#define KVS_VNNI 1
#define KVS_AVX512 0
#define KVS_TILE_TOKENS 2
#include "kernels/cpu/block_dot_x86.inc"
#undef KVS_DOT4
#undef KVS_VNNI
#undef KVS_AVX512
#undef KVS_TILE_TOKENS
}  // namespace avxvnni
#pragma GCC pop_options
#endif

struct DotKernels {
  const char* name;
  QuantizeFn quantize;
  UnpackedDotFn unpacked;
  std::optional<TileKernels> (*tiles_for)(GgmlType);  // nullopt: the type goes through the unpacked path
};

std::optional<TileKernels> NoTiles(GgmlType) { return std::nullopt; }

std::vector<DotKernels> SupportedKernels() {
  std::vector<DotKernels> k;
#ifdef KVS_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  // AVX-512 first where both VNNI forms exist: the same instruction, but 32 vector registers hold
  // a 4 x 4 tile's accumulators (AVX-VNNI's 16 hold 4 x 2).
  if (avx2 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw")) {
    k.push_back({"avx512-vnni", avx512vnni::QuantizeVector, avx512vnni::DotUnpacked, avx512vnni::TilesFor});
  }
  if (avx2 && __builtin_cpu_supports("avxvnni"))
    k.push_back({"avx-vnni", avxvnni::QuantizeVector, avxvnni::DotUnpacked, avxvnni::TilesFor});
  if (avx2) k.push_back({"avx2", avx2::QuantizeVector, avx2::DotUnpacked, avx2::TilesFor});
#endif
  k.push_back({"portable", QuantizeActivations, DotUnpackedPortable, NoTiles});
  return k;
}

// The best kernel set this CPU runs (the first supported), the one KVS_CPU_DOT_KERNELS names (for
// benchmarks: a set this CPU lacks is ignored), or the one SetBlockDotKernel chose.
DotKernels& Chosen() {
  static DotKernels chosen = [] {
    const std::vector<DotKernels> supported = SupportedKernels();
    if (const char* name = std::getenv("KVS_CPU_DOT_KERNELS")) {
      for (const DotKernels& k : supported) {
        if (std::string_view(name) == k.name) return k;
      }
    }
    return supported.front();
  }();
  return chosen;
}

// A weight row unpacked: q[k], scale per lane ws4[k / 4], offset per 16 (when the type has one).
struct RowScratch {
  std::vector<int8_t> q;
  std::vector<float> scale16, ws4, min16;
  void Resize(int64_t k) {
    q.resize(k);
    scale16.resize(k / kUnpackGroup);
    min16.resize(k / kUnpackGroup);
    ws4.resize(k / kLane);
  }
};

// A thread's buffers for DecodedRows, grown to the widest k it has decoded.
struct DecodedScratch {
  std::vector<UnitCodesStorage> codes;
  std::vector<float> scales, offsets;
  DecodedRows For(int64_t k, int64_t group_rows) {
    // A unit's codes: 32 bytes a row (UnitCodesStorage's size); its scales: up to 2 halves a row.
    codes.resize(static_cast<size_t>(k / 32 * group_rows));
    scales.resize(static_cast<size_t>(k / 32 * 2 * group_rows));
    offsets.resize(scales.size());
    return DecodedRows{reinterpret_cast<uint8_t*>(codes.data()), scales.data(), offsets.data()};
  }
};

struct ActivationScratch {
  std::vector<int8_t> q;
  std::vector<float> d, s, s16, xd4;
};

}  // namespace

bool BlockMatMulSupports(GgmlType type) {
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  return info && info->block_elems >= kActBlock && UnpackerFor(type).fn != nullptr;
}

std::string BlockDotKernelName() { return Chosen().name; }

bool SetBlockDotKernel(const std::string& name) {
  for (const DotKernels& k : SupportedKernels()) {
    if (name == k.name) {
      Chosen() = k;
      return true;
    }
  }
  return false;
}

void MatMulBlocks(GgmlType type, const float* x, int64_t x_stride, const uint8_t* w, int64_t row_bytes,
                  const float* bias, int64_t rows, int64_t k, int64_t n, float* out, int64_t out_stride) {
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  const BlockUnpacker unpack = UnpackerFor(type);
  KVS_CHECK_MSG(info && unpack.fn != nullptr && info->block_elems >= kActBlock, "MatMulBlocks: not a block type");
  KVS_CHECK(k % info->block_elems == 0 && row_bytes >= k / info->block_elems * info->block_bytes);
  if (rows <= 0 || n <= 0) return;

  // The caller's thread owns the activations; the pool's threads read them. (A thread_local
  // named inside the lambdas would be each worker's own: take a reference here.)
  static thread_local ActivationScratch caller_scratch;
  ActivationScratch& act = caller_scratch;
  const DotKernels kernels = Chosen();
  const std::optional<TileKernels> tiles = kernels.tiles_for(type);
  const int64_t blocks32 = k / kActBlock;
  // Block-major scales: a block's tokens side by side.
  const int64_t stride = rows;
  act.q.resize(rows * k);
  act.d.resize(blocks32 * stride);
  act.s.resize(blocks32 * stride);
  act.s16.resize(2 * blocks32 * stride);
  act.xd4.resize(tiles ? 0 : rows * k / kLane);
  ParallelFor(rows, kParallelWork / k, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      kernels.quantize(x + t * x_stride, k, act.q.data() + t * k, act.d.data() + t, act.s.data() + t,
                       act.s16.data() + t, stride, tiles ? nullptr : act.xd4.data() + t * (k / kLane));
    }
  });
  const ActivationView a{act.q.data(), act.d.data(), act.s.data(), act.s16.data(), k, stride};

  if (tiles) {
    // Groups of 4 rows (the last group's rows one at a time), each against tiles of tokens (the
    // last tokens one at a time); a prefill decodes its rows once, 16 or 8 at a time (the last
    // group padded), and its tokens past the last whole tile go through the groups of 4.
    const bool decode_once = rows >= kDecodeOnceTiles * tiles->tokens;
    const int64_t group_rows = decode_once ? tiles->wide_rows : kTileRows;
    const int64_t groups = (n + group_rows - 1) / group_rows;
    const int64_t grain = std::max<int64_t>(1, kParallelWork / (k * rows * group_rows));
    const int64_t whole_tiles_end = decode_once ? rows / tiles->tokens * tiles->tokens : 0;
    ParallelFor(groups, grain, [&](int64_t g0, int64_t g1) {
      static thread_local DecodedScratch decoded;
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t j0 = g * group_rows, j1 = std::min(n, j0 + group_rows);
        if (decode_once) {
          const DecodedRows d = decoded.For(k, group_rows);
          tiles->decode_wide(w + j0 * row_bytes, row_bytes, k, j1 - j0, d);
          const float* bj = bias != nullptr ? bias + j0 : nullptr;
          for (int64_t t0 = 0; t0 < whole_tiles_end; t0 += tiles->tokens) {
            tiles->decoded_wide_tile(d, a, t0, bj, j1 - j0, out + t0 * out_stride + j0, out_stride);
          }
        }
        for (int64_t q0 = j0; q0 < j1; q0 += kTileRows) {
          const bool four = q0 + kTileRows <= j1;
          for (int64_t r = 0; r < (four ? 1 : j1 - q0); ++r) {
            const int64_t j = q0 + r;
            const uint8_t* wj = w + j * row_bytes;
            const float* bj = bias != nullptr ? bias + j : nullptr;
            int64_t t0 = whole_tiles_end;
            for (; t0 + tiles->tokens <= rows; t0 += tiles->tokens) {
              tiles->fn[four][1](wj, row_bytes, a, t0, bj, out + t0 * out_stride + j, out_stride);
            }
            for (; t0 < rows; ++t0) {
              tiles->fn[four][0](wj, row_bytes, a, t0, bj, out + t0 * out_stride + j, out_stride);
            }
          }
        }
      }
    });
    return;
  }

  const int64_t grain = std::max<int64_t>(1, kParallelWork / (k * rows));
  const int64_t blocks = k / info->block_elems, groups_per_block = info->block_elems / kUnpackGroup;
  const int64_t groups = k / kUnpackGroup;
  ParallelFor(n, grain, [&](int64_t j0, int64_t j1) {
    static thread_local RowScratch row;
    row.Resize(k);
    for (int64_t j = j0; j < j1; ++j) {
      const uint8_t* wr = w + j * row_bytes;
      for (int64_t b = 0; b < blocks; ++b) {
        unpack.fn(wr + b * info->block_bytes, row.q.data() + b * info->block_elems,
                  row.scale16.data() + b * groups_per_block, row.min16.data() + b * groups_per_block);
      }
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t l = 0; l < kUnpackGroup / kLane; ++l) row.ws4[g * (kUnpackGroup / kLane) + l] = row.scale16[g];
      }
      const float b = bias != nullptr ? bias[j] : 0.0f;
      for (int64_t t = 0; t < rows; ++t) {
        float v = kernels.unpacked(row.q.data(), row.ws4.data(), act.q.data() + t * k, act.xd4.data() + t * (k / kLane), k);
        if (unpack.has_min) {
          float m = 0.0f;
          for (int64_t g = 0; g < groups; ++g) m += row.min16[g] * act.s16[g * stride + t];
          v += m;
        }
        out[t * out_stride + j] = v + b;
      }
    }
  });
}

}  // namespace kvs::cpu
