// DecodeKvRowsVector (kv_codec.h): cache rows decoded eight elements a vector, for the fast
// attention, which decodes every key and value it reads (a 4,096-token decode step of SmolLM2
// with an fp16 cache took 5-7x the f32 cache's time, decoding element by element).
//
// Each form gives DecodeKvRow's floats bit for bit: bf16 and fp16 widen exactly (F16C's
// conversion is IEEE's); an fp8 code's seven low bits shifted into an fp16 (sign kept) are the
// same value times 2^-8, so the widened fp16 times 2^8 is the codec's table entry exactly, with
// the one NaN code set apart; int8 converts exactly; then the same single multiply by the row's
// scale, and for int4 the same multiply and add (no fused multiply-add: the codec is compiled
// without contraction, and these are separate instructions).
#include <cstring>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/cpu/kv_codec.h"

namespace kvs::cpu {
namespace {

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
// One row of format T (dim a multiple of 8; of kKvInt4Group for int4).
template <KvDType T>
inline void RowAvx2(const unsigned char* in, const std::byte* scales, int32_t dim, float* out) {
  if constexpr (T == KvDType::kBF16) {
    for (int32_t d = 0; d < dim; d += 8) {
      const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * d)));
      _mm256_storeu_ps(out + d, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
  } else if constexpr (T == KvDType::kF16) {
    for (int32_t d = 0; d < dim; d += 8) {
      _mm256_storeu_ps(out + d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * d))));
    }
  } else if constexpr (T == KvDType::kFP8) {
    float s;
    std::memcpy(&s, scales, sizeof s);
    // 256 * s is exact (a power of two times a float; the encoder's scales are at most
    // FLT_MAX / 448, so it stays finite), so multiplying the widened fp16 by it rounds the same
    // real product once, as (fp16 * 256) * s does.
    const __m256 scale = _mm256_set1_ps(256.0f * s);
    const __m256i low7 = _mm256_set1_epi16(0x7f), sign = _mm256_set1_epi16(static_cast<int16_t>(0x8000));
    const __m256i fp16_nan = _mm256_set1_epi16(0x7e00);
    auto sixteen = [&](const unsigned char* c8) {  // 16 codes as 16 fp16 of the value / 2^8
      const __m256i c = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c8)));
      const __m256i mag = _mm256_and_si256(c, low7), sgn = _mm256_and_si256(_mm256_slli_epi16(c, 8), sign);
      const __m256i h = _mm256_or_si256(sgn, _mm256_slli_epi16(mag, 7));
      return _mm256_blendv_epi8(h, _mm256_or_si256(sgn, fp16_nan), _mm256_cmpeq_epi16(mag, low7));
    };
    int32_t d = 0;
    for (; d + 16 <= dim; d += 16) {
      const __m256i h = sixteen(in + d);
      _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), scale));
      _mm256_storeu_ps(out + d + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), scale));
    }
    if (d < dim) {  // the last 8 (dim is a multiple of 8): read as 16 from a copy
      alignas(16) unsigned char tail[16] = {};
      std::memcpy(tail, in + d, 8);
      _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(sixteen(tail))), scale));
    }
  } else if constexpr (T == KvDType::kINT8) {
    float s;
    std::memcpy(&s, scales, sizeof s);
    const __m256 scale = _mm256_set1_ps(s);
    for (int32_t d = 0; d < dim; d += 8) {
      const __m256i c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + d)));
      _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_cvtepi32_ps(c), scale));
    }
  } else {  // int4-token: groups of kKvInt4Group with an fp16 (scale, zero) pair each
    static_assert(T == KvDType::kINT4 && kKvInt4Group % 8 == 0);
    const auto* sz = reinterpret_cast<const uint16_t*>(scales);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), nibble = _mm256_set1_epi32(0xf);
    for (int32_t g = 0; g < dim / kKvInt4Group; ++g) {
      const __m256 s = _mm256_set1_ps(_cvtsh_ss(sz[2 * g])), z = _mm256_set1_ps(_cvtsh_ss(sz[2 * g + 1]));
      for (int32_t d = g * kKvInt4Group; d < (g + 1) * kKvInt4Group; d += 8) {
        uint32_t word;  // elements d..d+7, the first in the low nibble
        std::memcpy(&word, in + d / 2, sizeof word);
        const __m256i q =
            _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), nibble);
        _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), s), z));
      }
    }
  }
}

template <KvDType T>
void RowsAvx2(const std::byte* codes, int64_t code_stride, const std::byte* scales, int64_t scale_stride, int32_t rows,
              int32_t dim, float* out) {
  const auto* in = reinterpret_cast<const unsigned char*>(codes);
  for (int32_t r = 0; r < rows; ++r) {
    RowAvx2<T>(in + r * code_stride, scales + r * scale_stride, dim, out + static_cast<int64_t>(r) * dim);
  }
}

// Whether the vector forms decoded the rows (false: a format or dim they leave to the codec).
bool DecodeRowsAvx2(const std::byte* codes, int64_t code_stride, const std::byte* scales, int64_t scale_stride,
                    int32_t rows, KvDType t, int32_t dim, float* out) {
  if (dim % 8 != 0) return false;
  switch (t) {
    case KvDType::kBF16:
      RowsAvx2<KvDType::kBF16>(codes, code_stride, scales, scale_stride, rows, dim, out);
      return true;
    case KvDType::kF16: RowsAvx2<KvDType::kF16>(codes, code_stride, scales, scale_stride, rows, dim, out); return true;
    case KvDType::kFP8: RowsAvx2<KvDType::kFP8>(codes, code_stride, scales, scale_stride, rows, dim, out); return true;
    case KvDType::kINT8:
      RowsAvx2<KvDType::kINT8>(codes, code_stride, scales, scale_stride, rows, dim, out);
      return true;
    case KvDType::kINT4:
      if (dim % kKvInt4Group != 0) return false;
      RowsAvx2<KvDType::kINT4>(codes, code_stride, scales, scale_stride, rows, dim, out);
      return true;
    default: return false;
  }
}
#pragma GCC pop_options

bool HasAvx2F16c() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"); }
#endif

}  // namespace

void DecodeKvRowsVector(const std::byte* codes, int64_t code_stride, const std::byte* scales, int64_t scale_stride,
                        int32_t rows, KvDType t, int32_t dim, float* out) {
  // Adjacent f32 rows: one copy.
  if (t == KvDType::kF32 && code_stride == static_cast<int64_t>(sizeof(float)) * dim) {
    std::memcpy(out, codes, sizeof(float) * dim * static_cast<size_t>(rows));
    return;
  }
#if defined(__x86_64__)
  static const bool vector = HasAvx2F16c();
  if (vector && DecodeRowsAvx2(codes, code_stride, scales, scale_stride, rows, t, dim, out)) return;
#endif
  for (int32_t r = 0; r < rows; ++r) {
    DecodeKvRow(codes + r * code_stride, scales + r * scale_stride, t, dim, out + static_cast<int64_t>(r) * dim);
  }
}

}  // namespace kvs::cpu
