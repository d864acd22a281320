// Encoding and decoding of one (token, head) row of the KV cache in any KvDType — the CPU
// reference of what the CUDA kernels do on the fly (formats in kernels/common/kv_format.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/kv_format.h"

namespace kvs::cpu {

// Writes x[0..dim) as codes (KvRowBytes) and scales (KvScaleBytes; unused when 0).
void EncodeKvRow(const float* x, KvDType t, int32_t dim, std::byte* codes, std::byte* scales);
// The values the row holds, as floats.
void DecodeKvRow(const std::byte* codes, const std::byte* scales, KvDType t, int32_t dim, float* out);

}  // namespace kvs::cpu
