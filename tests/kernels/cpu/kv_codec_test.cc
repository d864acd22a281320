// The quantized KV formats on the CPU reference: the E4M3 and fp16 encoders against cuda_fp8.h /
// cuda_fp16.h (NVIDIA's host implementations, when the CUDA headers are present), round-trip error
// bounds per format, the block layout, and attention over a quantized cache.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/kv_quant.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/kv_codec.h"

#if defined(KVS_TEST_CUDA_HEADERS)
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace kvs {
namespace {

constexpr KvDType kAllFormats[] = {KvDType::kF32, KvDType::kBF16, KvDType::kF16,
                                   KvDType::kFP8, KvDType::kINT8, KvDType::kINT4};

double SquaredError(const float* x, const float* y, int32_t n) {
  double e = 0;
  for (int32_t i = 0; i < n; ++i) e += static_cast<double>(y[i] - x[i]) * (y[i] - x[i]);
  return e;
}

// The squared error of plain min-max quantization of x at `levels` steps with fp16 (s, z).
double PlainFitSquaredError(const float* x, int32_t n, float levels) {
  const auto [lo, hi] = std::minmax_element(x, x + n);
  const float s = Fp16BitsToFloat(FloatToFp16Bits((*hi - *lo) / levels)), z = Fp16BitsToFloat(FloatToFp16Bits(*lo));
  double e = 0;
  for (int32_t i = 0; i < n; ++i) {
    const float q = s > 0 ? std::clamp(std::nearbyint((x[i] - z) / s), 0.0f, levels) : 0.0f;
    e += static_cast<double>(q * s + z - x[i]) * (q * s + z - x[i]);
  }
  return e;
}

std::vector<float> SweepValues() {
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 448.0f, -448.0f, 449.0f, 464.0f, 465.0f, 1e9f, -1e9f,
                           0.015625f, 0.0078125f, 0.001953125f, 0.0009765625f, 0.0029296875f, 65504.0f, 65520.0f,
                           65519.0f, 6.1e-5f, 5.96e-8f, 2.98e-8f, std::numeric_limits<float>::infinity()};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> exp_dist(-30.0f, 20.0f);
  for (int i = 0; i < 200000; ++i) {
    const float v = std::exp2(exp_dist(rng));
    xs.push_back((i % 2) ? -v : v);
  }
  // Every midpoint between neighbouring E4M3 values: the ties round-to-nearest-even must break.
  for (int c = 0; c < 0x7e; ++c) {
    const float a = Fp8E4M3ToFloat(static_cast<uint8_t>(c)), b = Fp8E4M3ToFloat(static_cast<uint8_t>(c + 1));
    xs.push_back((a + b) / 2);
    xs.push_back(-(a + b) / 2);
  }
  return xs;
}

#if defined(KVS_TEST_CUDA_HEADERS)
TEST(KvCodecTest, Fp8E4M3MatchesCudaFp8OnEveryCodeAndASweep) {
  for (int c = 0; c < 256; ++c) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(c), __NV_E4M3);
    const float want = __half2float(__half(h));
    const float got = Fp8E4M3ToFloat(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << c;
    } else {
      EXPECT_EQ(got, want) << "code " << c;
    }
  }
  for (float x : SweepValues()) {
    const auto want = static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
    ASSERT_EQ(FloatToFp8E4M3(x), want) << "x = " << x;
  }
}

TEST(KvCodecTest, Fp16EncoderMatchesCudaFp16) {
  for (float x : SweepValues()) {
    const __half h = __float2half_rn(x);
    uint16_t want;
    std::memcpy(&want, &h, sizeof want);
    ASSERT_EQ(FloatToFp16Bits(x), want) << "x = " << x;
  }
}
#endif

TEST(KvCodecTest, Fp8DecodesWhatItEncodes) {
  for (int c = 0; c < 256; ++c) {
    if (c == 0x7f || c == 0xff) continue;  // NaN
    const float v = Fp8E4M3ToFloat(static_cast<uint8_t>(c));
    EXPECT_EQ(FloatToFp8E4M3(v), c == 0x80 ? 0x80 : c) << c;  // -0 stays -0
  }
  EXPECT_EQ(FloatToFp8E4M3(1e9f), 0x7e);  // saturates at 448
  EXPECT_EQ(FloatToFp8E4M3(-1e9f), 0xfe);
}

// Encode then decode one row: the error stays inside what each format's scale allows.
TEST(KvCodecTest, RoundTripErrorIsBoundedByTheFormat) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int32_t dim : {64, 128}) {
    for (KvDType t : {KvDType::kF32, KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4,
                      KvDType::kKivi4, KvDType::kKivi2}) {  // the last two: their value rows
      for (int trial = 0; trial < 200; ++trial) {
        std::vector<float> x(dim), y(dim);
        for (auto& v : x) v = normal(rng);
        if (trial == 0) std::fill(x.begin(), x.end(), 0.0f);  // a zero row decodes to zeros
        if (trial == 1) x[3] = 300.0f;                          // one outlier
        std::vector<std::byte> codes(KvRowBytes(t, dim)), scales(KvScaleBytes(t, dim) + 1);
        cpu::EncodeKvRow(x.data(), t, dim, codes.data(), scales.data());
        cpu::DecodeKvRow(codes.data(), scales.data(), t, dim, y.data());
        float amax = 0;
        for (float v : x) amax = std::max(amax, std::fabs(v));
        for (int32_t i = 0; i < dim; ++i) {
          float bound = 0;
          switch (t) {
            case KvDType::kF32: bound = 0; break;
            case KvDType::kBF16: bound = std::fabs(x[i]) * 0x1p-8f; break;
            case KvDType::kF16: bound = std::fabs(x[i]) * 0x1p-11f + 0x1p-25f; break;
            case KvDType::kINT8: bound = amax / 127 * 0.5001f; break;
            // 3 mantissa bits: half a step is 1/16 of the value; below 2^-6 * scale, subnormal steps.
            case KvDType::kFP8: bound = std::fabs(x[i]) / 16 + amax / 448 * 0x1p-10f + 1e-30f; break;
            case KvDType::kINT4: {
              const int32_t g = i / kKvInt4Group;
              const auto [lo, hi] = std::minmax_element(x.begin() + g * kKvInt4Group, x.begin() + (g + 1) * kKvInt4Group);
              bound = (*hi - *lo) / 15 * 0.51f + std::fabs(*lo) * 0x1p-10f + 16 * (*hi - *lo) / 15 * 0x1p-10f + 1e-6f;
              break;
            }
            case KvDType::kKivi4:
            case KvDType::kKivi2:  // least-squares fits: checked per group below
              bound = INFINITY;
              break;
          }
          ASSERT_LE(std::fabs(y[i] - x[i]), bound)
              << KvDTypeName(t) << " dim " << dim << " trial " << trial << " i " << i << " x " << x[i];
        }
        if (KvChannelQuantized(t)) {  // each group of 32: no worse than the plain min-max fit
          for (int32_t g = 0; g < dim / kKvInt4Group; ++g) {
            const float* xg = x.data() + g * kKvInt4Group;
            const double fitted = SquaredError(xg, y.data() + g * kKvInt4Group, kKvInt4Group);
            ASSERT_LE(fitted, PlainFitSquaredError(xg, kKvInt4Group, t == KvDType::kKivi2 ? 3 : 15) * 1.0001 + 1e-9)
                << KvDTypeName(t) << " dim " << dim << " trial " << trial << " group " << g;
          }
        }
      }
    }
  }
}

// Every (slot, head)'s codes and scales have their own bytes inside their block.
TEST(KvCodecTest, BlockLayoutGivesEveryRowItsOwnBytes) {
  for (KvDType t : kAllFormats) {
    for (int32_t bs : {1, 3, 16}) {
      const PagedKvView v{nullptr, nullptr, t, 4, bs, 3, 64};
      EXPECT_EQ(v.BlockBytes() % 16, 0);
      std::vector<int> owner(v.Bytes(), -1);
      for (int64_t slot = 0; slot < v.NumSlots(); ++slot) {
        for (int32_t h = 0; h < v.kv_heads; ++h) {
          const int id = static_cast<int>(slot * v.kv_heads + h);
          auto claim = [&](int64_t off, int64_t n) {
            if (n == 0) return;  // unquantized formats have no scales
            ASSERT_LE(off + n, v.Bytes());
            ASSERT_EQ(off / v.BlockBytes(), slot / bs) << "row outside its block";
            for (int64_t b = off; b < off + n; ++b) {
              ASSERT_EQ(owner[b], -1) << KvDTypeName(t) << " byte " << b << " shared";
              owner[b] = id;
            }
          };
          claim(v.RowOffset(slot, h), v.RowBytes());
          claim(v.ScaleOffset(slot, h), v.ScaleBytes());
        }
      }
    }
  }
}

// Attention over a quantized cache equals attention over an f32 cache holding the decoded
// values (the kernel decodes, nothing else changes), and stays near unquantized attention.
TEST(KvCodecTest, AttentionOverAQuantizedCacheReadsTheDecodedValues) {
  CpuBackend be(size_t{1} << 30);
  const int32_t q_heads = 8, kv_heads = 2, dim = 64, bs = 16, ctx = 300, blocks = (ctx + bs - 1) / bs;
  const int64_t width = kv_heads * dim, qw = q_heads * dim;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> k(ctx * width), v(ctx * width), q(2 * qw);
  for (auto* vec : {&k, &v, &q}) {
    for (auto& x : *vec) x = normal(rng);
  }
  std::vector<int32_t> slots(ctx), table(blocks), query_start{0, 1, 2}, context_len{ctx, ctx / 2};
  for (int32_t i = 0; i < blocks; ++i) table[i] = blocks - 1 - i;
  for (int32_t p = 0; p < ctx; ++p) slots[p] = table[p / bs] * bs + p % bs;
  std::vector<int32_t> tables(2 * blocks);
  std::copy(table.begin(), table.end(), tables.begin());
  std::copy(table.begin(), table.end(), tables.begin() + blocks);
  AttentionBatch batch{2, 2, blocks, ctx, 1, query_start.data(), context_len.data(), tables.data()};
  const float scale = 0.125f;
  auto attend = [&](KvDType t, bool decoded_copy) {
    const PagedKvView layout{nullptr, nullptr, t, blocks, bs, kv_heads, dim};
    std::vector<std::byte> kc(layout.Bytes()), vc(layout.Bytes());
    PagedKvView cache = layout;
    cache.k = kc.data();
    cache.v = vc.data();
    EXPECT_TRUE(be.WriteKv(TensorView::Contiguous(k.data(), DType::kF32, ctx, width),
                           TensorView::Contiguous(v.data(), DType::kF32, ctx, width), slots.data(), cache)
                    .ok());
    std::vector<float> kd, vd;
    PagedKvView f32 = cache;
    if (decoded_copy) {  // the same values, decoded into an f32 cache
      f32 = PagedKvView{nullptr, nullptr, KvDType::kF32, blocks, bs, kv_heads, dim};
      kd.resize(f32.Bytes() / 4);
      vd.resize(f32.Bytes() / 4);
      f32.k = kd.data();
      f32.v = vd.data();
      for (int64_t slot = 0; slot < cache.NumSlots(); ++slot) {
        for (int32_t h = 0; h < kv_heads; ++h) {
          cpu::DecodeKvRow(kc.data() + cache.RowOffset(slot, h), kc.data() + cache.ScaleOffset(slot, h), t, dim,
                           kd.data() + f32.RowOffset(slot, h) / 4);
          cpu::DecodeKvRow(vc.data() + cache.RowOffset(slot, h), vc.data() + cache.ScaleOffset(slot, h), t, dim,
                           vd.data() + f32.RowOffset(slot, h) / 4);
        }
      }
    }
    std::vector<float> out(2 * qw);
    EXPECT_TRUE(be.PagedAttention(TensorView::Contiguous(q.data(), DType::kF32, 2, qw), f32, batch, scale,
                                  TensorView::Contiguous(out.data(), DType::kF32, 2, qw))
                    .ok());
    return out;
  };
  const std::vector<float> exact = attend(KvDType::kF32, false);
  for (KvDType t : {KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4}) {
    const std::vector<float> got = attend(t, false), via_decoded = attend(t, true);
    EXPECT_EQ(got, via_decoded) << KvDTypeName(t);
    double err = 0, ref = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      err += (got[i] - exact[i]) * (got[i] - exact[i]);
      ref += exact[i] * exact[i];
    }
    const double rel = std::sqrt(err / ref);
    const double limit = t == KvDType::kINT4 ? 0.15 : t == KvDType::kFP8 ? 0.05 : 0.01;
    EXPECT_LT(rel, limit) << KvDTypeName(t);
    std::printf("[attention] %-5s relative RMS error vs f32 KV: %.2e\n", KvDTypeName(t).data(), rel);
  }
}

TEST(KvCodecTest, Int4RefusesHeadDimsItCannotGroup) {
  EXPECT_NE(KvDTypeHeadDimProblem(KvDType::kINT4, 16), nullptr);
  EXPECT_EQ(KvDTypeHeadDimProblem(KvDType::kINT4, 64), nullptr);
  EXPECT_NE(KvDTypeHeadDimProblem(KvDType::kINT8, 7), nullptr);
  CpuBackend be(size_t{1} << 20);
  EXPECT_FALSE(be.SupportsKvDType(KvDType::kINT4, 16));
  EXPECT_TRUE(be.SupportsKvDType(KvDType::kINT8, 16));
}

// Channel-quantized keys: each channel's (s, z) is fitted over that channel's values in the
// block's tokens, so an outlier channel costs only itself. The decode equals code * s + z with
// the stored fp16 pair, the code being round((x - z) / s) clamped to the format's levels —
// recomputed here from the definition (kernels/common/kv_format.h), element by element — and each
// channel's squared error is no worse than the plain min-max fit's.
TEST(KvCodecTest, KeyBlocksQuantizeEachChannelOverTheBlock) {
  const uint32_t seed = 31;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (KvDType t : {KvDType::kKivi4, KvDType::kKivi2}) {
    const float levels = t == KvDType::kKivi2 ? 3 : 15;
    for (int32_t n : {1, 5, 16}) {
      const int32_t dim = 64;
      std::vector<std::vector<float>> rows(n, std::vector<float>(dim));
      for (auto& r : rows) {
        for (int32_t d = 0; d < dim; ++d) r[d] = normal(rng) * (d == 7 ? 40.0f : 1.0f);  // channel 7: outliers
      }
      std::vector<const float*> ptrs;
      for (auto& r : rows) ptrs.push_back(r.data());
      const int64_t stride = KvRowBytes(t, dim) + 3;  // rows need not be adjacent
      std::vector<std::byte> codes(n * stride), scales(dim * 4);
      cpu::EncodeKeyBlock(ptrs.data(), n, t, dim, codes.data(), stride, scales.data());
      const auto* sz = reinterpret_cast<const uint16_t*>(scales.data());
      std::vector<float> y(dim);
      std::vector<std::vector<float>> decoded(n, std::vector<float>(dim));
      for (int32_t i = 0; i < n; ++i) cpu::DecodeKeyRow(codes.data() + i * stride, scales.data(), t, dim, decoded[i].data());
      for (int32_t d = 0; d < dim; ++d) {
        std::vector<float> column, got;
        for (int32_t i = 0; i < n; ++i) {
          column.push_back(rows[i][d]);
          got.push_back(decoded[i][d]);
        }
        ASSERT_LE(SquaredError(column.data(), got.data(), n), PlainFitSquaredError(column.data(), n, levels) * 1.0001 + 1e-9)
            << KvDTypeName(t) << " seed " << seed << " channel " << d;
      }
      for (int32_t i = 0; i < n; ++i) {
        cpu::DecodeKeyRow(codes.data() + i * stride, scales.data(), t, dim, y.data());
        for (int32_t d = 0; d < dim; ++d) {
          float lo = rows[0][d], hi = rows[0][d];
          for (const auto& r : rows) {
            lo = std::min(lo, r[d]);
            hi = std::max(hi, r[d]);
          }
          const float s = Fp16BitsToFloat(sz[2 * d]), z = Fp16BitsToFloat(sz[2 * d + 1]);
          const float q = s > 0 ? std::clamp(std::nearbyint((rows[i][d] - z) / s), 0.0f, levels) : 0.0f;
          ASSERT_FLOAT_EQ(y[d], q * s + z) << KvDTypeName(t) << " seed " << seed << " row " << i << " channel " << d;
          // The fit never widens the range: codes stay within [min, max] up to fp16 rounding.
          ASSERT_GE(y[d], lo - std::fabs(lo) * 0x1p-9f - 1e-6f);
          ASSERT_LE(y[d], hi + std::fabs(hi) * 0x1p-9f + (hi - lo) * 0x1p-9f + 1e-6f);
        }
      }
    }
  }
}

// Channel-quantized blocks: every row's codes, every row's value scales and every head's key
// channel scales have their own bytes inside their block.
TEST(KvCodecTest, ChannelQuantizedBlocksGiveEveryPartItsOwnBytes) {
  for (KvDType t : {KvDType::kKivi4, KvDType::kKivi2}) {
    for (int32_t bs : {1, 4, 16, 32}) {
      const PagedKvView v{nullptr, nullptr, t, 3, bs, 3, 64};
      EXPECT_EQ(v.BlockBytes() % 16, 0);
      for (int64_t block = 0; block < v.num_blocks; ++block) {
        std::vector<int> codes(v.BlockBytes(), 0), row_scales(v.BlockBytes(), 0), channel(v.BlockBytes(), 0);
        const int64_t base = block * v.BlockBytes();
        for (int64_t slot = block * bs; slot < (block + 1) * bs; ++slot) {
          for (int32_t h = 0; h < v.kv_heads; ++h) {
            for (int64_t b = 0; b < v.RowBytes(); ++b) ASSERT_EQ(codes[v.RowOffset(slot, h) - base + b]++, 0);
            for (int64_t b = 0; b < v.ScaleBytes(); ++b) ASSERT_EQ(row_scales[v.ScaleOffset(slot, h) - base + b]++, 0);
          }
        }
        for (int32_t h = 0; h < v.kv_heads; ++h) {
          for (int64_t b = 0; b < v.head_dim * 4; ++b) ASSERT_EQ(channel[v.ChannelScaleOffset(block, h) - base + b]++, 0);
        }
        for (int64_t b = 0; b < v.BlockBytes(); ++b) {
          EXPECT_LE(codes[b] + row_scales[b], 1) << "a value scale over a code";
          EXPECT_LE(codes[b] + channel[b], 1) << "a key scale over a code";
        }
      }
    }
  }
}

// A sequence written step by step (a prefill in chunks that end mid-block, then decodes): the
// blocks each step completes are sealed whole (keys per channel from the residual's earlier rows
// and the step's rows), the rest stays in the bf16 residual, and attention reads exactly that —
// compared with attention computed here from the rows decoded by the codec, element by element.
TEST(KvCodecTest, SealedBlocksAndTheResidualAreWhatAttentionReads) {
  const uint32_t seed = 77;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Rings of one block (each block sealed when whole) and of three (the newest 16 tokens kept).
  for (int32_t ring_blocks : {1, 3}) {
    for (KvDType t : {KvDType::kKivi4, KvDType::kKivi2}) {
      for (CpuMath math : {CpuMath::kReference, CpuMath::kFast}) {
        CpuBackend be(size_t{1} << 28, math);
        const int32_t kv_heads = 2, q_heads = 4, dim = 64, bs = 8, blocks = 8;
        PagedKvView cache{nullptr, nullptr, t, blocks, bs, kv_heads, dim};
        std::vector<std::byte> kc(cache.Bytes()), vc(cache.Bytes());
        std::vector<uint16_t> kr(ring_blocks * bs * kv_heads * dim), vr(kr.size());
        cache.k = kc.data();
        cache.v = vc.data();
        cache.k_residual = kr.data();
        cache.v_residual = vr.data();
        cache.num_residual = 1;
        cache.residual_blocks = ring_blocks;
        const KvResidualRing ring = cache.ring();
        int32_t sealed_before = 0;
        const std::vector<int32_t> table = {5, 2, 7, 0, 3, 1, 6, 4};  // blocks out of order
        // Every token's rows [kv_heads * dim] as the seal sees them: bf16-rounded once they waited in
        // the ring (sealed in a later step), else as computed.
        std::vector<std::vector<float>> keys, values;
        int32_t ctx = 0;
        for (int32_t n : {11, 9, 1, 1, 1, 1, 1, 1, 1, 5}) {  // chunks ending mid-block, then decodes
          std::vector<float> k(n * kv_heads * dim), v(k.size()), q(n * q_heads * dim), out(q.size());
          for (auto* a : {&k, &v, &q}) {
            for (float& x : *a) x = normal(rng);
          }
          for (int32_t i = 0; i < n; ++i) k[i * kv_heads * dim + 3] *= 30.0f;  // an outlier key channel
          std::vector<int32_t> slots;
          for (int32_t i = 0; i < n; ++i) {
            const int32_t p = ctx + i;
            slots.push_back(p < ring.SealedEnd(ctx + n) ? -1 : -(2 + static_cast<int32_t>(ring.Slot(0, p))));
            keys.emplace_back(k.begin() + i * kv_heads * dim, k.begin() + (i + 1) * kv_heads * dim);
            values.emplace_back(v.begin() + i * kv_heads * dim, v.begin() + (i + 1) * kv_heads * dim);
          }
          for (int32_t p = sealed_before; p < ctx; ++p) {  // the previous steps' rows in the ring
            for (auto* rows : {&keys, &values}) {
              for (float& x : (*rows)[p]) x = Bf16BitsToFloat(FloatToBf16Bits(x));
            }
          }
          ctx += n;
          const std::vector<int32_t> qs = {0, n}, lens = {ctx}, residual = {0}, sealed_at = {sealed_before};
          AttentionBatch batch{
              1, n, blocks, ctx, n, qs.data(), lens.data(), table.data(), residual.data(), sealed_at.data()};
          const TensorView kt{k.data(), DType::kF32, n, kv_heads * dim, kv_heads * dim};
          const TensorView vt{v.data(), DType::kF32, n, kv_heads * dim, kv_heads * dim};
          ASSERT_TRUE(be.SealKvGroups(kt, vt, batch, cache).ok());
          ASSERT_TRUE(be.WriteKv(kt, vt, slots.data(), cache).ok());
          const TensorView qt{q.data(), DType::kF32, n, q_heads * dim, q_heads * dim};
          const TensorView ot{out.data(), DType::kF32, n, q_heads * dim, q_heads * dim};
          ASSERT_TRUE(be.PagedAttention(qt, cache, batch, 0.125f, ot).ok());
          // What the cache should hold now: sealed blocks encoded from the original rows, the rest bf16.
          const int32_t sealed = sealed_before = std::max(sealed_before, ring.SealedEnd(ctx));
          std::vector<std::vector<float>> dk(ctx, std::vector<float>(kv_heads * dim)), dv = dk;
          for (int32_t h = 0; h < kv_heads; ++h) {
            for (int32_t b0 = 0; b0 < sealed; b0 += bs) {
              std::vector<const float*> rows;
              for (int32_t i = 0; i < bs; ++i) rows.push_back(keys[b0 + i].data() + h * dim);
              std::vector<std::byte> codes(bs * KvRowBytes(t, dim)), scales(dim * 4), vcodes(KvRowBytes(t, dim)),
                  vscales(KvScaleBytes(t, dim));
              cpu::EncodeKeyBlock(rows.data(), bs, t, dim, codes.data(), KvRowBytes(t, dim), scales.data());
              for (int32_t i = 0; i < bs; ++i) {
                cpu::DecodeKeyRow(codes.data() + i * KvRowBytes(t, dim), scales.data(), t, dim,
                                  dk[b0 + i].data() + h * dim);
                cpu::EncodeKvRow(values[b0 + i].data() + h * dim, t, dim, vcodes.data(), vscales.data());
                cpu::DecodeKvRow(vcodes.data(), vscales.data(), t, dim, dv[b0 + i].data() + h * dim);
              }
            }
            for (int32_t p = sealed; p < ctx; ++p) {
              for (int32_t d = 0; d < dim; ++d) {
                dk[p][h * dim + d] = Bf16BitsToFloat(FloatToBf16Bits(keys[p][h * dim + d]));
                dv[p][h * dim + d] = Bf16BitsToFloat(FloatToBf16Bits(values[p][h * dim + d]));
              }
            }
          }
          for (int32_t i = 0; i < n; ++i) {
            const int32_t pos = ctx - n + i;
            for (int32_t hq = 0; hq < q_heads; ++hq) {
              const int32_t h = hq / (q_heads / kv_heads);
              std::vector<double> score(pos + 1);
              double mx = -1e30, sum = 0;
              for (int32_t p = 0; p <= pos; ++p) {
                double dot = 0;
                for (int32_t d = 0; d < dim; ++d) dot += q[(i * q_heads + hq) * dim + d] * dk[p][h * dim + d];
                score[p] = dot * 0.125;
                mx = std::max(mx, score[p]);
              }
              for (double& sc : score) sum += (sc = std::exp(sc - mx));
              for (int32_t d = 0; d < dim; ++d) {
                double want = 0;
                for (int32_t p = 0; p <= pos; ++p) want += score[p] / sum * dv[p][h * dim + d];
                const float got = out[(i * q_heads + hq) * dim + d];
                ASSERT_NEAR(got, want, 1e-4 + 1e-4 * std::fabs(want))
                    << KvDTypeName(t) << " seed " << seed << " ring " << ring_blocks << " ctx " << ctx << " row " << i
                    << " head " << hq << " d " << d;
              }
            }
          }
        }
      }
    }
  }
}

// The fast attention's vector row decoder against the codec, bit for bit (NaN against NaN): rows
// the encoder wrote from random values (zeros and NaN among them) and rows of raw random codes
// and scales, so that every fp8 code (the NaN codes included), every int8 and
// int4 code and fp16 / bf16 bit patterns all occur; head dims that take the 16-wide fp8 loop,
// its 8-wide tail, and ones left to the codec (not a multiple of 8).
TEST(KvCodecTest, VectorRowDecoderGivesTheCodecsFloats) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  auto same = [](float want, float got) {
    return std::isnan(want) ? std::isnan(got) : std::memcmp(&want, &got, sizeof want) == 0;
  };
  for (KvDType t : {KvDType::kF32, KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4,
                    KvDType::kKivi4, KvDType::kKivi2}) {  // the last two: their value rows (left to the codec)
    for (int32_t dim : {8, 24, 32, 36, 40, 64, 96, 128, 256}) {
      if (KvDTypeHeadDimProblem(t, dim) != nullptr) continue;
      // Three rows a call, apart by more than a row (as a cache block's rows of one head are).
      constexpr int32_t kRows = 3;
      const int64_t row_bytes = KvRowBytes(t, dim), scale_bytes = std::max<int64_t>(4, KvScaleBytes(t, dim));
      const int64_t code_stride = row_bytes + 8, scale_stride = scale_bytes + 4;
      std::vector<std::byte> codes(kRows * code_stride), scales(kRows * scale_stride);
      std::vector<float> x(dim), want(dim), got(kRows * dim);
      for (int trial = 0; trial < 200; ++trial) {
        for (int32_t r = 0; r < kRows; ++r) {
          std::byte* c = codes.data() + r * code_stride;
          std::byte* sc = scales.data() + r * scale_stride;
          if ((trial + r) % 2 == 0) {  // encoded from values over 2^-8 .. 2^7 in size
            for (float& v : x) v = normal(rng) * std::exp2(static_cast<float>(byte(rng) % 16) - 8);
            if (trial % 10 == 0) x[byte(rng) % dim] = 0.0f;
            if (trial % 20 == 0) x[byte(rng) % dim] = std::numeric_limits<float>::quiet_NaN();
            cpu::EncodeKvRow(x.data(), t, dim, c, sc);
          } else {  // raw codes and scales
            for (int64_t b = 0; b < row_bytes; ++b) c[b] = static_cast<std::byte>(byte(rng));
            for (int64_t b = 0; b < scale_bytes; ++b) sc[b] = static_cast<std::byte>(byte(rng));
            if (t == KvDType::kFP8 || t == KvDType::kINT8) {  // a finite scale of any magnitude
              const float v = std::exp2(static_cast<float>(byte(rng)) / 4 - 40) * (trial % 4 == 1 ? -1.0f : 1.0f);
              std::memcpy(sc, &v, sizeof v);
            }
          }
        }
        std::fill(got.begin(), got.end(), -12345.0f);
        cpu::DecodeKvRowsVector(codes.data(), code_stride, scales.data(), scale_stride, kRows, t, dim, got.data());
        for (int32_t r = 0; r < kRows; ++r) {
          cpu::DecodeKvRow(codes.data() + r * code_stride, scales.data() + r * scale_stride, t, dim, want.data());
          for (int32_t i = 0; i < dim; ++i) {
            ASSERT_TRUE(same(want[i], got[r * dim + i]))
                << KvDTypeName(t) << " dim " << dim << " trial " << trial << " row " << r << " element " << i
                << ": codec " << want[i] << ", vector " << got[r * dim + i];
          }
        }
      }
    }
  }
  // Every fp8 code once, with a scale of 1, the smallest subnormal and one near the largest.
  for (float s : {1.0f, std::numeric_limits<float>::denorm_min(), 3.0e35f}) {
    std::vector<std::byte> codes(256);
    for (int c = 0; c < 256; ++c) codes[c] = static_cast<std::byte>(c);
    std::vector<float> want(256), got(256);
    std::byte scale[4];
    std::memcpy(scale, &s, sizeof s);
    cpu::DecodeKvRow(codes.data(), scale, KvDType::kFP8, 256, want.data());
    cpu::DecodeKvRowsVector(codes.data(), 0, scale, 0, 1, KvDType::kFP8, 256, got.data());
    for (int c = 0; c < 256; ++c) ASSERT_TRUE(same(want[c], got[c])) << "fp8 code " << c << " scale " << s;
  }
}

}  // namespace
}  // namespace kvs
