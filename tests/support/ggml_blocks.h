// Random GGML blocks for the decoder and matmul tests: random code bytes with finite scale fields
// (fp16 for every type but Q8_K's f32), so that every weight decodes to a finite value.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/common/ggml_types.h"
#include "kernels/common/half_convert.h"

namespace kvs::testing {

// Every GGML block type kvshard decodes.
inline constexpr GgmlType kBlockTypes[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0,  GgmlType::kQ5_1,
                                           GgmlType::kQ8_0, GgmlType::kQ2_K, GgmlType::kQ3_K,  GgmlType::kQ4_K,
                                           GgmlType::kQ5_K, GgmlType::kQ6_K, GgmlType::kQ8_K,  GgmlType::kIQ4_NL,
                                           GgmlType::kIQ4_XS};

// Every block type the CUDA backend keeps: GGML's, and kvshard's own F8_E4M3 (FP8 weights).
inline std::vector<GgmlType> GpuBlockTypes() {
  std::vector<GgmlType> all(std::begin(kBlockTypes), std::end(kBlockTypes));
  all.push_back(GgmlType::kF8_E4M3);
  return all;
}

// `rows` rows of `k` weights (k a multiple of the block) of block type `t`.
inline std::vector<uint8_t> RandomGgmlBlocks(GgmlType t, int64_t rows, int64_t k, std::mt19937& rng) {
  const auto info = *LookupGgmlType(static_cast<uint32_t>(t));
  const int64_t blocks = rows * k / info.block_elems;
  std::vector<uint8_t> bytes(blocks * info.block_bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* blk = bytes.data() + b * info.block_bytes;
    if (t == GgmlType::kQ8_K || t == GgmlType::kF8_E4M3) {  // an f32 scale: Q8_K's first, F8_E4M3's last
      const float d = scale(rng);
      std::memcpy(blk + (t == GgmlType::kQ8_K ? 0 : kF8BlockElems), &d, 4);
      if (t == GgmlType::kF8_E4M3) {
        for (int e = 0; e < kF8BlockElems; ++e) {
          if ((blk[e] & 0x7f) == 0x7f) blk[e] ^= 1;  // not the NaN codes
        }
      }
      continue;
    }
    for (int at : GgmlHalfScaleOffsets(t)) {
      const uint16_t h = FloatToFp16Bits((byte(rng) & 1 ? -1.0f : 1.0f) * scale(rng));
      std::memcpy(blk + at, &h, 2);
    }
  }
  return bytes;
}

// One output of a matmul whose activations are rounded to int8 per 32 (scale max|x| / 127, as
// the fast CPU matmul and the GPU's block GEMV do), against the weights decoded exactly.
struct RoundedDot {
  double value = 0;      // sum x w, in double
  double magnitude = 0;  // sum |x w|: float32 summation adds a relative 1e-5 of it
  double rounding = 0;   // the most the activations' rounding can move it: sum over blocks of
                         // (max|x| / 127 / 2) * sum |w|
};
inline RoundedDot ReferenceDot(const float* x, const float* w, int64_t k) {
  RoundedDot d;
  for (int64_t b = 0; b < k / 32; ++b) {
    double amax = 0.0, wsum = 0.0;
    for (int64_t e = 32 * b; e < 32 * b + 32; ++e) {
      d.value += static_cast<double>(x[e]) * w[e];
      d.magnitude += std::fabs(static_cast<double>(x[e]) * w[e]);
      amax = std::max(amax, std::fabs(static_cast<double>(x[e])));
      wsum += std::fabs(static_cast<double>(w[e]));
    }
    d.rounding += amax / 127.0 / 2.0 * wsum * 1.0001;
  }
  return d;
}

}  // namespace kvs::testing
