#include "kernels/cpu/block_matmul.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

// One token-tile's activations, as the fused kernels read them: q[t * k + e], and per block of 32
// the scale d[t * k/32 + b] and d * sum(q) in s.
struct ActivationView {
  const int8_t* q;
  const float* d;
  const float* s;
  int64_t k;
};

// A row of unpacked weights against one token (any block type): sum over lanes l of 4 of the
// int8 products, times ws4[l] * xd4[l].
using UnpackedDotFn = float (*)(const int8_t* wq, const float* ws4, const int8_t* xq, const float* xd4, int64_t k);
// Tokens a fused kernel takes at once: each weight block is decoded once for all of them (two
// accumulators each: 8 of the 16 AVX2 registers).
constexpr int64_t kTokenTile = 4;

// A weight row in its blocks against `tokens` (1 to kTokenTile) tokens: out[t].
using FusedDotFn = void (*)(const uint8_t* w, const ActivationView& a, int tokens, float* out);

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
#include "kernels/cpu/block_dot_x86.inc"
#undef KVS_DOT4
}  // namespace avx2
#pragma GCC pop_options

// Ice Lake / Cascade Lake servers have VNNI only in its AVX-512 form (EVEX, here at 256 bits).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")
namespace avx512vnni {
#define KVS_DOT4(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "kernels/cpu/block_dot_x86.inc"
#undef KVS_DOT4
}  // namespace avx512vnni
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
namespace avxvnni {
#define KVS_DOT4(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
#include "kernels/cpu/block_dot_x86.inc"
#undef KVS_DOT4
}  // namespace avxvnni
#pragma GCC pop_options
#endif

struct DotKernels {
  const char* name;
  UnpackedDotFn unpacked;
  FusedDotFn (*fused_for)(GgmlType);  // null: every type goes through the unpacked path
};

FusedDotFn NoFused(GgmlType) { return nullptr; }

std::vector<DotKernels> SupportedKernels() {
  std::vector<DotKernels> k;
#ifdef KVS_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx2 && __builtin_cpu_supports("avxvnni")) k.push_back({"avx-vnni", avxvnni::DotUnpacked, avxvnni::FusedFor});
  if (avx2 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw")) {
    k.push_back({"avx512-vnni", avx512vnni::DotUnpacked, avx512vnni::FusedFor});
  }
  if (avx2) k.push_back({"avx2", avx2::DotUnpacked, avx2::FusedFor});
#endif
  k.push_back({"portable", DotUnpackedPortable, NoFused});
  return k;
}

// The best kernel set this CPU runs (the first supported), or the one SetBlockDotKernel chose.
DotKernels& Chosen() {
  static DotKernels chosen = SupportedKernels().front();
  return chosen;
}

// One token's activations: q[k]; per block of 32 its scale xd and d * sum(q) in xs; the scale per
// lane of 4 (xd4[k / 4]) and d * sum(q) per 16 values (xsum16: the unpacked path's offsets, since
// sum_e min * x_e = min * d * sum q).
void QuantizeActivations(const float* x, int64_t k, int8_t* q, float* xd4, float* xsum16, float* xd, float* xs) {
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
    for (int64_t l = 0; l < kActBlock / kLane; ++l) xd4[b * (kActBlock / kLane) + l] = d;
    int32_t total = 0;
    for (int64_t g = 0; g < 2; ++g) {
      int32_t s = 0;
      for (int64_t i = 0; i < kUnpackGroup; ++i) s += qb[g * kUnpackGroup + i];
      xsum16[2 * b + g] = d * static_cast<float>(s);
      total += s;
    }
    xd[b] = d;
    xs[b] = d * static_cast<float>(total);
  }
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

struct ActivationScratch {
  std::vector<int8_t> q;
  std::vector<float> xd4, xsum16, xd, xs;
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
  const int64_t blocks32 = k / kActBlock;
  act.q.resize(rows * k);
  act.xd4.resize(rows * k / kLane);
  act.xsum16.resize(rows * k / kUnpackGroup);
  act.xd.resize(rows * blocks32);
  act.xs.resize(rows * blocks32);
  ParallelFor(rows, kParallelWork / k, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      QuantizeActivations(x + t * x_stride, k, act.q.data() + t * k, act.xd4.data() + t * (k / kLane),
                          act.xsum16.data() + t * (k / kUnpackGroup), act.xd.data() + t * blocks32,
                          act.xs.data() + t * blocks32);
    }
  });
  const DotKernels kernels = Chosen();
  const int64_t grain = std::max<int64_t>(1, kParallelWork / (k * rows));

  if (const FusedDotFn fused = kernels.fused_for(type)) {
    ParallelFor(n, grain, [&](int64_t j0, int64_t j1) {
      float dots[kTokenTile];
      for (int64_t j = j0; j < j1; ++j) {
        const float b = bias != nullptr ? bias[j] : 0.0f;
        for (int64_t t0 = 0; t0 < rows; t0 += kTokenTile) {
          const int tile = static_cast<int>(std::min(kTokenTile, rows - t0));
          const ActivationView a{act.q.data() + t0 * k, act.xd.data() + t0 * blocks32, act.xs.data() + t0 * blocks32, k};
          fused(w + j * row_bytes, a, tile, dots);
          for (int t = 0; t < tile; ++t) out[(t0 + t) * out_stride + j] = dots[t] + b;
        }
      }
    });
    return;
  }

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
          const float* xs = act.xsum16.data() + t * groups;
          float m = 0.0f;
#pragma omp simd reduction(+ : m)
          for (int64_t g = 0; g < groups; ++g) m += row.min16[g] * xs[g];
          v += m;
        }
        out[t * out_stride + j] = v + b;
      }
    }
  });
}

}  // namespace kvs::cpu
