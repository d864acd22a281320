#include "kernels/cpu/kv_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "kernels/common/half_convert.h"
#include "kernels/common/kv_quant.h"

namespace kvs::cpu {
namespace {

float AbsMax(const float* x, int32_t n) {
  float m = 0.0f;
  for (int32_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// All 256 E4M3 values: the decode is a table lookup, not a frexp/ldexp per element.
const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = Fp8E4M3ToFloat(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

}  // namespace

void EncodeKvRow(const float* x, KvDType t, int32_t dim, std::byte* codes, std::byte* scales) {
  switch (t) {
    case KvDType::kF32:
      std::memcpy(codes, x, sizeof(float) * dim);
      return;
    case KvDType::kBF16:
    case KvDType::kF16: {
      auto* out = reinterpret_cast<uint16_t*>(codes);
      for (int32_t i = 0; i < dim; ++i) out[i] = t == KvDType::kBF16 ? FloatToBf16Bits(x[i]) : FloatToFp16Bits(x[i]);
      return;
    }
    case KvDType::kFP8: {
      const float s = Fp8Scale(AbsMax(x, dim)), inv = SafeInverse(s);
      auto* out = reinterpret_cast<uint8_t*>(codes);
      for (int32_t i = 0; i < dim; ++i) out[i] = FloatToFp8E4M3(x[i] * inv);
      std::memcpy(scales, &s, sizeof s);
      return;
    }
    case KvDType::kINT8: {
      const float s = Int8Scale(AbsMax(x, dim)), inv = SafeInverse(s);
      auto* out = reinterpret_cast<int8_t*>(codes);
      for (int32_t i = 0; i < dim; ++i) out[i] = QuantizeInt8(x[i], inv);
      std::memcpy(scales, &s, sizeof s);
      return;
    }
    case KvDType::kINT4: {
      auto* out = reinterpret_cast<uint8_t*>(codes);
      auto* sz = reinterpret_cast<uint16_t*>(scales);
      for (int32_t g = 0; g < dim / kKvInt4Group; ++g) {
        const float* xg = x + g * kKvInt4Group;
        const auto [lo, hi] = std::minmax_element(xg, xg + kKvInt4Group);
        // Quantize against the fp16-rounded scale and zero: the ones a reader will use.
        const uint16_t s_bits = FloatToFp16Bits((*hi - *lo) / kInt4Levels), z_bits = FloatToFp16Bits(*lo);
        sz[2 * g] = s_bits;
        sz[2 * g + 1] = z_bits;
        const float s = Fp16BitsToFloat(s_bits), z = Fp16BitsToFloat(z_bits), inv = SafeInverse(s);
        for (int32_t i = 0; i < kKvInt4Group; i += 2) {
          const uint8_t a = QuantizeInt4(xg[i], z, inv), b = QuantizeInt4(xg[i + 1], z, inv);
          out[(g * kKvInt4Group + i) / 2] = static_cast<uint8_t>(a | (b << 4));
        }
      }
      return;
    }
  }
}

void DecodeKvRow(const std::byte* codes, const std::byte* scales, KvDType t, int32_t dim, float* out) {
  switch (t) {
    case KvDType::kF32:
      std::memcpy(out, codes, sizeof(float) * dim);
      return;
    case KvDType::kBF16:
    case KvDType::kF16: {
      const auto* in = reinterpret_cast<const uint16_t*>(codes);
      for (int32_t i = 0; i < dim; ++i) out[i] = t == KvDType::kBF16 ? Bf16BitsToFloat(in[i]) : Fp16BitsToFloat(in[i]);
      return;
    }
    case KvDType::kFP8:
    case KvDType::kINT8: {
      float s;
      std::memcpy(&s, scales, sizeof s);
      if (t == KvDType::kFP8) {
        const auto* in = reinterpret_cast<const uint8_t*>(codes);
        const std::array<float, 256>& table = Fp8Table();
        for (int32_t i = 0; i < dim; ++i) out[i] = table[in[i]] * s;
      } else {
        const auto* in = reinterpret_cast<const int8_t*>(codes);
        for (int32_t i = 0; i < dim; ++i) out[i] = static_cast<float>(in[i]) * s;
      }
      return;
    }
    case KvDType::kINT4: {
      const auto* in = reinterpret_cast<const uint8_t*>(codes);
      const auto* sz = reinterpret_cast<const uint16_t*>(scales);
      for (int32_t i = 0; i < dim; ++i) {
        const int32_t g = i / kKvInt4Group;
        const uint8_t q = (i % 2 == 0) ? (in[i / 2] & 0xf) : (in[i / 2] >> 4);
        out[i] = static_cast<float>(q) * Fp16BitsToFloat(sz[2 * g]) + Fp16BitsToFloat(sz[2 * g + 1]);
      }
      return;
    }
  }
}

}  // namespace kvs::cpu
