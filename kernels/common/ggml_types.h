// GGML tensor element types as stored in GGUF files, with their block layouts.
// Quantized types pack `block_elems` weights into `block_bytes` bytes:
//   Q4_0 (18 B / 32): f16 d; u8 qs[16]      w[j] = (lo4(qs[j]) - 8) * d, w[j+16] = (hi4(qs[j]) - 8) * d
//   Q4_1 (20 B / 32): f16 d, m; u8 qs[16]   w[j] = lo4(qs[j]) * d + m,  w[j+16] = hi4(qs[j]) * d + m
//   Q5_0 (22 B / 32): f16 d; u32 qh; qs[16] 5th bit of element j in bit j of qh; (q - 16) * d
//   Q5_1 (24 B / 32): f16 d, m; u32 qh; qs[16]  q * d + m
//   Q8_0 (34 B / 32): f16 d; i8 qs[32]      w[j] = qs[j] * d
// (all little-endian; the layouts follow ggml's reference implementation, ggml-quants.c)
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kvs {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kBF16 = 30,
};

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
  }
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
