// Random GGML blocks for the decoder and matmul tests: random code bytes with finite scale fields
// (fp16 for every type but Q8_K's f32), so that every weight decodes to a finite value.
#pragma once

#include <cstdint>
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
    if (t == GgmlType::kQ8_K) {
      const float d = scale(rng);
      std::memcpy(blk, &d, 4);
      continue;
    }
    for (int at : GgmlHalfScaleOffsets(t)) {
      const uint16_t h = FloatToFp16Bits((byte(rng) & 1 ? -1.0f : 1.0f) * scale(rng));
      std::memcpy(blk + at, &h, 2);
    }
  }
  return bytes;
}

}  // namespace kvs::testing
