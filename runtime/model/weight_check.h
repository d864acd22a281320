// A fast pass over a GGUF file's weights for non-finite values (NaN, Inf), before anything is
// built from them: a file with a NaN-filled embedding otherwise loads and generates garbage with
// exit status 0. Plain floats (F32, F16, BF16) are checked element by element by their exponent
// bits; block-quantized types by their fp16 scales (d, and m where the type has one), the only
// places a quantized block can hold a non-finite value. One read of the mapped file, no decoding.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "runtime/model/gguf_file.h"

namespace kvs {

enum class WeightCheck { kAuto, kOn, kOff };

// Files up to this size are checked under kAuto (SmolLM2's 98 MB takes a few milliseconds; a 40 GB
// file would take seconds of disk reads on every start, so large files are checked on request).
inline constexpr uint64_t kAutoWeightCheckBytes = uint64_t{4} << 30;

// InvalidArgument naming the tensor and the first bad element (or block), with the way out.
absl::Status CheckGgufWeightsFinite(const GgufFile& file);

}  // namespace kvs
