// GGML tensor element types as stored in GGUF files, with their block layouts.
// Quantized types pack `block_elems` weights into `block_bytes` bytes:
//   Q4_0 (18 B / 32): f16 d; u8 qs[16]      w[j] = (lo4(qs[j]) - 8) * d, w[j+16] = (hi4(qs[j]) - 8) * d
//   Q4_1 (20 B / 32): f16 d, m; u8 qs[16]   w[j] = lo4(qs[j]) * d + m,  w[j+16] = hi4(qs[j]) * d + m
//   Q5_0 (22 B / 32): f16 d; u32 qh; qs[16] 5th bit of element j in bit j of qh; (q - 16) * d
//   Q5_1 (24 B / 32): f16 d, m; u32 qh; qs[16]  q * d + m
//   Q8_0 (34 B / 32): f16 d; i8 qs[32]      w[j] = qs[j] * d
//   IQ4_NL (18 B / 32): f16 d; u8 qs[16]    w[j] = d * kIq4Values[lo4(qs[j])], w[j+16] = ... hi4
// K-quants, 256 weights in sub-blocks of 16 or 32 (element e; sub-block scales as noted):
//   Q2_K (84 B): u8 scales[16] (lo4 scale, hi4 min), u8 qs[64], f16 d, dmin
//     q = (qs[32(e/128) + e%32] >> 2((e/32)%4)) & 3;  w = d*sc(e/16) * q - dmin*min(e/16)
//   Q3_K (110 B): u8 hmask[32], qs[64], scales[12] (16 x 6 bits), f16 d
//     q = lowbits2(as Q2_K) - 4*(bit (e/32) of hmask[e%32] == 0);  w = d * (scale(e/16) - 32) * q
//   Q4_K (144 B): f16 d, dmin; u8 scales[12] (8 x 6-bit scale and min); u8 qs[128]
//     q = (qs[32(e/64) + e%32] >> 4((e/32)%2)) & 15;  w = d*sc(e/32) * q - dmin*min(e/32)
//   Q5_K (176 B): as Q4_K with u8 qh[32] before qs: q |= ((qh[e%32] >> (e/32)) & 1) << 4
//   Q6_K (210 B): u8 ql[128], qh[64]; i8 scales[16]; f16 d
//     q = (ql[64(e/128) + e%64] >> 4((e/64)%2) & 15) | ((qh[32(e/128) + e%32] >> 2((e/32)%4)) & 3) << 4
//     w = d * scales[e/16] * (q - 32)
//   Q8_K (292 B): f32 d; i8 qs[256]; i16 bsums[16]   w = d * qs[e]
//   IQ4_XS (136 B): f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]
//     scale(j) = (lo4/hi4 of scales_l[j/2] | ((scales_h >> 2j) & 3) << 4) - 32 for sub-block j of 32
//     w = d * scale(e/32) * kIq4Values[(qs[16(e/32) + e%16] >> 4((e/16)%2)) & 15]
// kvshard's own block type, never read from a GGUF file (LookupGgufType refuses its id):
//   F8_E4M3 (132 B / 128): u8 codes[128] (E4M3, "fn"); f32 scale   w[j] = e4m3(codes[j]) * scale
//     FP8 weights (Hugging Face checkpoints, `--quantize fp8`) kept in 8 bits on the GPU. One scale
//     per 128 columns of a row holds each of vLLM's layouts exactly: per tensor, per channel (row),
//     and transformers' 128 x 128 blocks.
// (all little-endian; the layouts follow ggml's reference implementation, ggml-quants.c, and the
// `gguf` package's dequantization, which the CPU decoder equals bit for bit: tests/goldens/ggml)
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "kernels/common/host_device.h"

namespace kvs {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ4_NL = 20,
  kIQ4_XS = 23,
  kBF16 = 30,
  kF8_E4M3 = 0x1000,  // kvshard's own (above); far from GGML's ids, which grow one at a time
};

// IQ4_NL / IQ4_XS code book (ggml's kvalues_iq4nl).
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// F8_E4M3: codes per block (then the block's f32 scale).
inline constexpr int32_t kF8BlockElems = 128;

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;
  int32_t block_elems;  // weights per block (1 for plain floats)
  int32_t block_bytes;  // bytes per block
};

// Layout of a GGML type id that kvshard can decode, or nullopt for any other id.
constexpr std::optional<GgmlTypeInfo> LookupGgmlType(uint32_t id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32:
      return GgmlTypeInfo{GgmlType::kF32, "F32", 1, 4};
    case GgmlType::kF16:
      return GgmlTypeInfo{GgmlType::kF16, "F16", 1, 2};
    case GgmlType::kBF16:
      return GgmlTypeInfo{GgmlType::kBF16, "BF16", 1, 2};
    case GgmlType::kQ4_0:
      return GgmlTypeInfo{GgmlType::kQ4_0, "Q4_0", 32, 18};
    case GgmlType::kQ4_1:
      return GgmlTypeInfo{GgmlType::kQ4_1, "Q4_1", 32, 20};
    case GgmlType::kQ5_0:
      return GgmlTypeInfo{GgmlType::kQ5_0, "Q5_0", 32, 22};
    case GgmlType::kQ5_1:
      return GgmlTypeInfo{GgmlType::kQ5_1, "Q5_1", 32, 24};
    case GgmlType::kQ8_0:
      return GgmlTypeInfo{GgmlType::kQ8_0, "Q8_0", 32, 34};
    case GgmlType::kQ2_K:
      return GgmlTypeInfo{GgmlType::kQ2_K, "Q2_K", 256, 84};
    case GgmlType::kQ3_K:
      return GgmlTypeInfo{GgmlType::kQ3_K, "Q3_K", 256, 110};
    case GgmlType::kQ4_K:
      return GgmlTypeInfo{GgmlType::kQ4_K, "Q4_K", 256, 144};
    case GgmlType::kQ5_K:
      return GgmlTypeInfo{GgmlType::kQ5_K, "Q5_K", 256, 176};
    case GgmlType::kQ6_K:
      return GgmlTypeInfo{GgmlType::kQ6_K, "Q6_K", 256, 210};
    case GgmlType::kQ8_K:
      return GgmlTypeInfo{GgmlType::kQ8_K, "Q8_K", 256, 292};
    case GgmlType::kIQ4_NL:
      return GgmlTypeInfo{GgmlType::kIQ4_NL, "IQ4_NL", 32, 18};
    case GgmlType::kIQ4_XS:
      return GgmlTypeInfo{GgmlType::kIQ4_XS, "IQ4_XS", 256, 136};
    case GgmlType::kF8_E4M3: return GgmlTypeInfo{GgmlType::kF8_E4M3, "F8_E4M3", kF8BlockElems, kF8BlockElems + 4};
  }
  return std::nullopt;
}

// LookupGgmlType for an id read from a GGUF file: kvshard's own types are not GGML's, so a file
// naming one is refused as an unknown type.
constexpr std::optional<GgmlTypeInfo> LookupGgufType(uint32_t id) {
  return static_cast<GgmlType>(id) == GgmlType::kF8_E4M3 ? std::nullopt : LookupGgmlType(id);
}

// Q4_K / Q5_K: sub-block j's (0-7) 6-bit scale and min from the block's 12 packed scale bytes
// (the CPU and CUDA decoders share it).
KVS_HOST_DEVICE inline void ScaleMinK4(const uint8_t* s, int j, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 0x3F;
    m = s[j + 4] & 0x3F;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
    m = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
  }
}

// Byte offsets of a block type's fp16 scale fields (Q8_K's one scale is an f32 at 0): what a
// writer of synthetic blocks must set to finite values.
inline std::vector<int> GgmlHalfScaleOffsets(GgmlType t) {
  switch (t) {
    case GgmlType::kQ4_0: case GgmlType::kQ5_0: case GgmlType::kQ8_0: case GgmlType::kIQ4_NL: case GgmlType::kIQ4_XS:
      return {0};
    case GgmlType::kQ4_1: case GgmlType::kQ5_1: case GgmlType::kQ4_K: case GgmlType::kQ5_K:
      return {0, 2};
    case GgmlType::kQ2_K: return {80, 82};
    case GgmlType::kQ3_K: return {108};
    case GgmlType::kQ6_K: return {208};
    default: return {};
  }
}

// The type kvshard decodes whose name (as LookupGgmlType gives it: "Q4_K") is `name`.
inline std::optional<GgmlType> GgmlTypeByName(std::string_view name) {
  for (uint32_t id = 0; id < 64; ++id) {
    if (const auto info = LookupGgmlType(id); info && info->name == name) return info->type;
  }
  if (name == "F8_E4M3") return GgmlType::kF8_E4M3;
  return std::nullopt;
}

// Names of GGML types kvshard does not decode (for error messages naming the type).
constexpr std::string_view GgmlTypeNameForError(uint32_t id) {
  constexpr std::string_view kNames[] = {
      "F32",  "F16",  "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
      "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
  return id < sizeof(kNames) / sizeof(kNames[0]) ? kNames[id] : "unknown";
}

}  // namespace kvs
