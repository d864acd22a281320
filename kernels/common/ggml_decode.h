// Decodes GGML-typed bytes (see kernels/common/ggml_types.h) into float32 on the host.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/common/ggml_types.h"

namespace kvs {

// Decodes `out.size()` elements from `src`. The caller has checked that src holds exactly
// out.size() / block_elems blocks of `type` and that out.size() is a multiple of block_elems.
void DequantizeToF32(GgmlType type, std::span<const uint8_t> src, std::span<float> out);

// Every GGML block type in one form: weight e of a block is scale[e / 16] * q[e], plus min[e / 16]
// for the types with an offset (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) — the decoder's own arithmetic, so
// DequantizeToF32 is built on it, and the integer dot products of the fast CPU matmul
// (block_matmul.h) read exactly the values the reference decodes.
inline constexpr int32_t kUnpackGroup = 16;
inline constexpr int32_t kMaxBlockElems = 256;
struct BlockUnpacker {
  // Writes block_elems q values and block_elems / 16 scales (and mins when has_min).
  void (*fn)(const uint8_t* block, int8_t* q, float* scale, float* min) = nullptr;
  bool has_min = false;
};
// Null fn for the plain float types.
BlockUnpacker UnpackerFor(GgmlType type);

}  // namespace kvs
