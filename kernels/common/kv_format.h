// KV cache element formats (`--kv-dtype`) and their byte layout, shared by host and device code.
//
// One block of one layer's K (or V) cache is one contiguous run of KvBlockBytes() bytes:
//   data   [block_size][kv_heads][KvRowBytes]     each head's D elements of one token, encoded
//   scales [block_size][kv_heads][KvScaleBytes]   what decodes them (quantized formats only)
// padded to 16 bytes. A block therefore moves as one piece (swap to host, copy-on-write), and the
// unquantized formats keep the plain [slot][kv_head][d] layout of kernels/common/paged_kv.h.
//
// Formats (x: one token's D values of one head; s: scale):
//   f32, bf16, fp16  x itself.
//   fp8   E4M3 codes of x / s, s = max|x| / 448; one f32 s per (token, head).
//   int8  round(x / s) in [-127, 127], s = max|x| / 127; one f32 s per (token, head).
//   int4  per group of 32 elements: round((x - z) / s) in [0, 15], s = (max - min) / 15, z = min;
//         s and z as fp16 (scale then zero); two codes per byte, element 2i in the low nibble.
// Per-(token, head) scales need no calibration and keep one outlier token from costing the
// others their precision; the quantization itself is in kernels/common/kv_quant.h.
//
// Channel-quantized formats (KIVI: keys have outlier channels, so keys are quantized per channel
// over a block's tokens and values per token):
//   int4 / int2  K: per (block, head, channel), round((x - z) / s) clamped to [0, 15] (or [0, 3])
//                over the block's block_size tokens; V: per (token, head), groups of 32 elements.
//                Each (s, z) is an fp16 pair fitted by least squares over the range and shrunk
//                ranges (kernels/cpu/kv_codec.cc: FitScaleZero). Codes pack little-end first (4 or
//                2 per byte).
//   A block is written once, whole, when its last token arrives (Backend::SealKvGroups); until
//   then a sequence's newest tokens live in bf16 in its residual block (PagedKvView::k_residual),
//   which belongs to the sequence, never to a shared prefix. Block layout:
//     codes  [block_size][kv_heads][KvRowBytes]
//     scales K: [kv_heads][head_dim] (scale, zero);  V: [block_size][kv_heads][head_dim / 32] (scale, zero)
//   the scales region sized for the larger of the two, so K and V blocks have one size.
// `int4-token` is the per-token int4 above (the one the CUDA kernels read).
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/common/host_device.h"

namespace kvs {

enum class KvDType : uint8_t { kF32, kBF16, kF16, kFP8, kINT8, kINT4, kKivi4, kKivi2 };

inline constexpr int32_t kKvInt4Group = 32;  // elements per int4 scale/zero pair

constexpr std::string_view KvDTypeName(KvDType t) {
  switch (t) {
    case KvDType::kF32: return "f32";
    case KvDType::kBF16: return "bf16";
    case KvDType::kF16: return "fp16";
    case KvDType::kFP8: return "fp8";
    case KvDType::kINT8: return "int8";
    case KvDType::kINT4: return "int4-token";
    case KvDType::kKivi4: return "int4";
    case KvDType::kKivi2: return "int2";
  }
  return "?";
}

// Keys quantized per channel over a block, values per token, the newest tokens in a residual.
KVS_HOST_DEVICE constexpr bool KvChannelQuantized(KvDType t) { return t == KvDType::kKivi4 || t == KvDType::kKivi2; }

KVS_HOST_DEVICE constexpr bool KvQuantized(KvDType t) {
  return t == KvDType::kFP8 || t == KvDType::kINT8 || t == KvDType::kINT4 || KvChannelQuantized(t);
}

KVS_HOST_DEVICE constexpr int32_t KvBitsPerElement(KvDType t) {
  switch (t) {
    case KvDType::kF32: return 32;
    case KvDType::kBF16:
    case KvDType::kF16: return 16;
    case KvDType::kFP8:
    case KvDType::kINT8: return 8;
    case KvDType::kINT4:
    case KvDType::kKivi4: return 4;
    case KvDType::kKivi2: return 2;
  }
  return 0;
}

// Bytes of one token's codes for one head.
KVS_HOST_DEVICE constexpr int64_t KvRowBytes(KvDType t, int32_t head_dim) {
  return static_cast<int64_t>(head_dim) * KvBitsPerElement(t) / 8;
}

// Bytes of one token's scales for one head.
KVS_HOST_DEVICE constexpr int64_t KvScaleBytes(KvDType t, int32_t head_dim) {
  switch (t) {
    case KvDType::kFP8:
    case KvDType::kINT8: return 4;
    case KvDType::kINT4:
    case KvDType::kKivi4:
    case KvDType::kKivi2: return static_cast<int64_t>(head_dim / kKvInt4Group) * 4;  // a value row's
    default: return 0;
  }
}

// Bytes of one block's per-channel key scales (channel-quantized formats).
KVS_HOST_DEVICE constexpr int64_t KvChannelScaleBytes(KvDType t, int32_t kv_heads, int32_t head_dim) {
  return KvChannelQuantized(t) ? static_cast<int64_t>(kv_heads) * head_dim * 4 : 0;
}

KVS_HOST_DEVICE constexpr int64_t KvBlockBytes(KvDType t, int32_t block_size, int32_t kv_heads, int32_t head_dim) {
  const int64_t codes = static_cast<int64_t>(block_size) * kv_heads * KvRowBytes(t, head_dim);
  const int64_t row_scales = static_cast<int64_t>(block_size) * kv_heads * KvScaleBytes(t, head_dim);
  const int64_t scales = row_scales > KvChannelScaleBytes(t, kv_heads, head_dim) ? row_scales
                                                                                  : KvChannelScaleBytes(t, kv_heads, head_dim);
  return (codes + scales + 15) / 16 * 16;
}

// Whether `t` can store heads of `head_dim` elements (why not, when it cannot).
constexpr const char* KvDTypeHeadDimProblem(KvDType t, int32_t head_dim) {
  if (head_dim <= 0 || head_dim % 2 != 0) return "head_dim must be positive and even";
  if (t == KvDType::kINT4 && head_dim % kKvInt4Group != 0) return "int4-token KV needs head_dim a multiple of 32";
  if (KvChannelQuantized(t) && head_dim % kKvInt4Group != 0) return "int4 / int2 KV needs head_dim a multiple of 32";
  return nullptr;
}

}  // namespace kvs
