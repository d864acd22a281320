// Decodes GGML-typed bytes (see kernels/common/ggml_types.h) into float32 on the host.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/common/ggml_types.h"

namespace kvs::cpu {

// Decodes `out.size()` elements from `src`. The caller has checked that src holds exactly
// out.size() / block_elems blocks of `type` and that out.size() is a multiple of block_elems.
void DequantizeToF32(GgmlType type, std::span<const uint8_t> src, std::span<float> out);

}  // namespace kvs::cpu
