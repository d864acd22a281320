#include "kernels/cpu/kv_codec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/common/half_convert.h"
#include "kernels/common/kv_quant.h"
#include "kernels/common/status_macros.h"

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

// Codes per byte and levels of a channel-quantized format.
int32_t CodesPerByte(KvDType t) { return t == KvDType::kKivi2 ? 4 : 2; }
float Levels(KvDType t) { return t == KvDType::kKivi2 ? 3.0f : kInt4Levels; }

void PutCode(uint8_t* codes, int32_t i, uint8_t q, int32_t per_byte) {
  const int32_t bits = 8 / per_byte, shift = (i % per_byte) * bits;
  codes[i / per_byte] = static_cast<uint8_t>((codes[i / per_byte] & ~(((1 << bits) - 1) << shift)) | (q << shift));
}

uint8_t GetCode(const uint8_t* codes, int32_t i, int32_t per_byte) {
  const int32_t bits = 8 / per_byte;
  return static_cast<uint8_t>((codes[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1));
}

// The host's fp16 conversions, for FitScaleZero (kernels/common/kv_quant.h).
struct HostHalf {
  uint16_t Round(float x) const { return FloatToFp16Bits(x); }
  float Value(uint16_t bits) const { return Fp16BitsToFloat(bits); }
};

ScaleZero FitValues(const float* x, int32_t n, float levels) {
  return kvs::FitScaleZero([x](int32_t i) { return x[i]; }, n, levels, HostHalf{});
}

}  // namespace

void EncodeKeyBlock(const float* const* rows, int32_t n, KvDType t, int32_t dim, std::byte* codes, int64_t code_stride,
                    std::byte* channel_scales) {
  const int32_t per_byte = CodesPerByte(t);
  const float levels = Levels(t);
  auto* sz = reinterpret_cast<uint16_t*>(channel_scales);
  std::vector<float> column(n);
  for (int32_t d = 0; d < dim; ++d) {
    for (int32_t i = 0; i < n; ++i) column[i] = rows[i][d];
    const ScaleZero q = FitValues(column.data(), n, levels);
    sz[2 * d] = q.s_bits;
    sz[2 * d + 1] = q.z_bits;
    for (int32_t i = 0; i < n; ++i) {
      PutCode(reinterpret_cast<uint8_t*>(codes + i * code_stride), d, QuantizeLevels(rows[i][d], q.z, q.inv, levels),
              per_byte);
    }
  }
}

void DecodeKeyRow(const std::byte* codes, const std::byte* channel_scales, KvDType t, int32_t dim, float* out) {
  const int32_t per_byte = CodesPerByte(t);
  const auto* in = reinterpret_cast<const uint8_t*>(codes);
  const auto* sz = reinterpret_cast<const uint16_t*>(channel_scales);
  for (int32_t d = 0; d < dim; ++d) {
    out[d] = static_cast<float>(GetCode(in, d, per_byte)) * Fp16BitsToFloat(sz[2 * d]) + Fp16BitsToFloat(sz[2 * d + 1]);
  }
}

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
    case KvDType::kKivi4:
    case KvDType::kKivi2: {  // a value row: groups of 32 along the channels
      const int32_t per_byte = CodesPerByte(t);
      const float levels = Levels(t);
      auto* out = reinterpret_cast<uint8_t*>(codes);
      auto* sz = reinterpret_cast<uint16_t*>(scales);
      for (int32_t g = 0; g < dim / kKvInt4Group; ++g) {
        const float* xg = x + g * kKvInt4Group;
        const ScaleZero q = FitValues(xg, kKvInt4Group, levels);
        sz[2 * g] = q.s_bits;
        sz[2 * g + 1] = q.z_bits;
        for (int32_t i = 0; i < kKvInt4Group; ++i) {
          PutCode(out, g * kKvInt4Group + i, QuantizeLevels(xg[i], q.z, q.inv, levels), per_byte);
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
    case KvDType::kKivi4:
    case KvDType::kKivi2: {
      const int32_t per_byte = CodesPerByte(t);
      const auto* in = reinterpret_cast<const uint8_t*>(codes);
      const auto* sz = reinterpret_cast<const uint16_t*>(scales);
      for (int32_t i = 0; i < dim; ++i) {
        const int32_t g = i / kKvInt4Group;
        out[i] = static_cast<float>(GetCode(in, i, per_byte)) * Fp16BitsToFloat(sz[2 * g]) +
                 Fp16BitsToFloat(sz[2 * g + 1]);
      }
      return;
    }
  }
}

KvRowReader::KvRowReader(const PagedKvView& cache, const AttentionBatch& batch, int32_t seq, int32_t kv_head)
    : cache_(cache), blocks_(batch.block_table + static_cast<int64_t>(seq) * batch.max_blocks_per_seq), kv_head_(kv_head) {
  if (KvChannelQuantized(cache.dtype)) {
    sealed_ = cache.ring().SealedEnd(batch.context_len[seq]);
    if (batch.sealed != nullptr) sealed_ = std::max(sealed_, batch.sealed[seq]);
    residual_ = batch.residual != nullptr ? batch.residual[seq] : -1;
    holds_sink_ = batch.sink != nullptr && batch.sink[seq] != 0;
  }
}

int64_t KvRowReader::Slot(int32_t pos) const {
  const int64_t block = blocks_[pos / cache_.block_size];
  KVS_CHECK_MSG(block >= 0 && block < cache_.num_blocks, "block table entry outside the cache");
  return block * cache_.block_size + pos % cache_.block_size;
}

KvRowReader::StoredRun KvRowReader::Stored(int32_t pos, int32_t count) const {
  KVS_CHECK(RowsStoredPerToken(cache_.dtype));
  const int64_t slot = Slot(pos);
  const auto* kc = static_cast<const std::byte*>(cache_.k);
  const auto* vc = static_cast<const std::byte*>(cache_.v);
  const int64_t row = cache_.RowOffset(slot, kv_head_), scales = cache_.ScaleOffset(slot, kv_head_);
  const int32_t in_block = cache_.block_size - static_cast<int32_t>(slot % cache_.block_size);
  return StoredRun{kc + row,
                   vc + row,
                   kc + scales,
                   vc + scales,
                   cache_.kv_heads * cache_.RowBytes(),
                   cache_.kv_heads * cache_.ScaleBytes(),
                   std::min(count, in_block)};
}

void KvRowReader::Read(int32_t pos, float* key_buf, float* value_buf, const float*& key, const float*& value) const {
  const int32_t dim = cache_.head_dim;
  if (KvChannelQuantized(cache_.dtype) && cache_.ring().Reads(pos, sealed_, holds_sink_)) {
    KVS_CHECK_MSG(residual_ >= 0 && residual_ < cache_.num_residual, "a sequence's newest keys need its residual block");
    const int64_t r = cache_.ring().Slot(residual_, pos);
    DecodeKvRow(static_cast<const std::byte*>(cache_.k_residual) + cache_.ResidualRowOffset(r, kv_head_), nullptr,
                KvDType::kBF16, dim, key_buf);
    DecodeKvRow(static_cast<const std::byte*>(cache_.v_residual) + cache_.ResidualRowOffset(r, kv_head_), nullptr,
                KvDType::kBF16, dim, value_buf);
    key = key_buf;
    value = value_buf;
    return;
  }
  const int64_t slot = Slot(pos);
  const int64_t block = slot / cache_.block_size;
  const auto* kc = static_cast<const std::byte*>(cache_.k);
  const auto* vc = static_cast<const std::byte*>(cache_.v);
  const int64_t row = cache_.RowOffset(slot, kv_head_), scales = cache_.ScaleOffset(slot, kv_head_);
  if (cache_.dtype == KvDType::kF32) {  // stored as floats: read in place
    key = reinterpret_cast<const float*>(kc + row);
    value = reinterpret_cast<const float*>(vc + row);
    return;
  }
  if (KvChannelQuantized(cache_.dtype)) {
    DecodeKeyRow(kc + row, kc + cache_.ChannelScaleOffset(block, kv_head_), cache_.dtype, dim, key_buf);
  } else {
    DecodeKvRow(kc + row, kc + scales, cache_.dtype, dim, key_buf);
  }
  DecodeKvRow(vc + row, vc + scales, cache_.dtype, dim, value_buf);
  key = key_buf;
  value = value_buf;
}

}  // namespace kvs::cpu
