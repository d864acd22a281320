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
    for (KvDType t : kAllFormats) {
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
              // half a step, plus the fp16 rounding of the zero point and scale
              bound = (*hi - *lo) / 15 * 0.51f + std::fabs(*lo) * 0x1p-10f + 16 * (*hi - *lo) / 15 * 0x1p-10f + 1e-6f;
              break;
            }
          }
          ASSERT_LE(std::fabs(y[i] - x[i]), bound)
              << KvDTypeName(t) << " dim " << dim << " trial " << trial << " i " << i << " x " << x[i];
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

}  // namespace
}  // namespace kvs
