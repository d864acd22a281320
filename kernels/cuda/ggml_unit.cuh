// GGML block types read on the GPU 32 weights at a time ("a unit"): the unit's codes as int8,
// packed four to a 32-bit word (word w holds weights 4w..4w+3), and per 16 weights the scale and
// offset of the CPU unpacker (kernels/cpu/dequantize.cc) computed with the same float operations,
// so that scale * q + min rounds exactly as the CPU decoder (and the gguf package) does.
//
// Packed words let the decode GEMV multiply codes with int8 activations by __dp4a, four products
// an instruction, and let a thread unpack a word with a few shifts and masks instead of four byte
// loads: within every type the four weights of a word come from four consecutive bytes at one
// shift (kernels/common/ggml_types.h gives the layouts).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/ggml_types.h"

namespace kvs::cuda::ggml {

struct Unit {
  uint32_t q[8];   // int8 codes, four per word
  float scale[2];  // per 16 weights
  float min[2];    // per 16 weights; 0 for the types without an offset
};

// Per type: block bytes, units per block, whether the weights carry an offset, and the alignment
// (2, 4 or 16 bytes) that every run of words the reader loads keeps, given rows that start on it
// (blocks of a multiple of that size): 16 lets a unit's 32 code bytes come in two 16-byte loads; the
// 18-, 22-, 34-, 110- and 210-byte blocks sit only 2-byte aligned.
template <GgmlType T>
struct Traits;
#define KVS_GGML_TRAITS(type, bytes, units, has_min, align)                                                      \
  template <>                                                                                                    \
  struct Traits<GgmlType::type> {                                                                                \
    static constexpr int kBlockBytes = bytes, kUnits = units, kAlign = align;                                    \
    static constexpr bool kHasMin = has_min;                                                                     \
  };
KVS_GGML_TRAITS(kQ4_0, 18, 1, false, 2)
KVS_GGML_TRAITS(kQ4_1, 20, 1, true, 4)
KVS_GGML_TRAITS(kQ5_0, 22, 1, false, 2)
KVS_GGML_TRAITS(kQ5_1, 24, 1, true, 4)
KVS_GGML_TRAITS(kQ8_0, 34, 1, false, 2)
KVS_GGML_TRAITS(kIQ4_NL, 18, 1, false, 2)
KVS_GGML_TRAITS(kQ2_K, 84, 8, true, 4)
KVS_GGML_TRAITS(kQ3_K, 110, 8, false, 2)
KVS_GGML_TRAITS(kQ4_K, 144, 8, true, 16)
KVS_GGML_TRAITS(kQ5_K, 176, 8, true, 16)
KVS_GGML_TRAITS(kQ6_K, 210, 8, false, 2)
KVS_GGML_TRAITS(kQ8_K, 292, 8, false, 4)
KVS_GGML_TRAITS(kIQ4_XS, 136, 8, false, 4)
#undef KVS_GGML_TRAITS

// A block as a header (its scales and mins) and a payload (its codes): where they lie in the stored
// block (the payload is one run of bytes; the header is the rest, in order) and their sizes.
// Split rows are how the CUDA backend keeps these types' weights (ArrangeBlocks, once at load): a
// row's payloads, then its headers, both in block order — the row's bytes, rearranged. A warp's
// 32 consecutive units then read their codes from contiguous bytes (16-byte loads where rows are
// 16-byte aligned) and their scales from a few lines, where stored 18-byte Q4_0 blocks took six
// 2-byte-aligned loads a lane across 576 bytes each: the decode GEMV was bound by the L1 wavefronts
// of those loads, not by DRAM (docs/performance.md). Q8_K (no preset writes it) stays as stored.
// Q4_K's and Q5_K's blocks are then also re-laid per unit within their own bytes (kRelaid).
template <GgmlType T>
struct Parts;
#define KVS_GGML_PARTS(type, split, header_at, header, payload_at, payload)                                    \
  template <>                                                                                                  \
  struct Parts<GgmlType::type> {                                                                               \
    static constexpr bool kSplit = split;                                                                      \
    static constexpr int kHeaderAt = header_at, kHeader = header, kPayloadAt = payload_at, kPayload = payload; \
    /* A payload's alignment in split rows that start on 16 bytes and hold a multiple of 16 bytes of */        \
    /* payloads. */                                                                                            \
    static constexpr int kWideAlign = payload % 16 == 0 ? 16 : 4;                                              \
  };
KVS_GGML_PARTS(kQ4_0, true, 0, 2, 2, 16)
KVS_GGML_PARTS(kIQ4_NL, true, 0, 2, 2, 16)
KVS_GGML_PARTS(kQ4_1, true, 0, 4, 4, 16)
KVS_GGML_PARTS(kQ5_0, true, 0, 2, 2, 20)  // payload: qh, then qs
KVS_GGML_PARTS(kQ5_1, true, 0, 4, 4, 20)
KVS_GGML_PARTS(kQ8_0, true, 0, 2, 2, 32)
KVS_GGML_PARTS(kQ2_K, true, 0, 20, 16, 64)    // header: scales, then d and dmin (bytes 80-83 stored)
KVS_GGML_PARTS(kQ3_K, true, 96, 14, 0, 96)    // payload: hmask, qs; header: scales, d
KVS_GGML_PARTS(kQ4_K, true, 0, 16, 16, 128)   // header: d, dmin, scales
KVS_GGML_PARTS(kQ5_K, true, 0, 16, 16, 160)   // payload: qh, qs
KVS_GGML_PARTS(kQ6_K, true, 192, 18, 0, 192)  // payload: ql, qh; header: scales, d
KVS_GGML_PARTS(kIQ4_XS, true, 0, 8, 8, 128)   // header: d, scales_h, scales_l
KVS_GGML_PARTS(kQ8_K, false, 0, 4, 4, 256)    // bsums (bytes 260-291) unread
#undef KVS_GGML_PARTS

// F<T>::Run(args...) for the block type `type`; cudaErrorInvalidValue for a plain float type or an
// id kvshard does not know.
template <template <GgmlType> class F, typename... Args>
cudaError_t DispatchBlockType(GgmlType type, Args&&... args) {
  switch (type) {
#define KVS_CASE(t)  \
  case GgmlType::t:  \
    return F<GgmlType::t>::Run(args...);
    KVS_CASE(kQ4_0) KVS_CASE(kQ4_1) KVS_CASE(kQ5_0) KVS_CASE(kQ5_1) KVS_CASE(kQ8_0) KVS_CASE(kIQ4_NL)
    KVS_CASE(kQ2_K) KVS_CASE(kQ3_K) KVS_CASE(kQ4_K) KVS_CASE(kQ5_K) KVS_CASE(kQ6_K) KVS_CASE(kQ8_K)
    KVS_CASE(kIQ4_XS)
#undef KVS_CASE
    default:
      return cudaErrorInvalidValue;
  }
}

// Whether rows of type T at `base`, `row_bytes` apart, keep the words ReadUnit loads aligned.
template <GgmlType T>
bool RowsAligned(const void* base, int64_t row_bytes) {
  const int64_t need = Traits<T>::kAlign;
  return row_bytes % need == 0 && reinterpret_cast<uintptr_t>(base) % need == 0;
}

__device__ __forceinline__ uint32_t U16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
// N consecutive little-endian words from p, which sits on a kAlign-byte boundary. 16: in 16-byte
// loads. 2: cut from N (+1) aligned words by funnel shifts, half the loads of two 16-bit halves
// per word (Q6_K's unit reads 16 words).
template <int N, int kAlign>
__device__ __forceinline__ void Words(const uint8_t* p, uint32_t (&v)[N]) {
  if constexpr (kAlign == 16 && N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const uint4 q = reinterpret_cast<const uint4*>(p)[i];
      v[4 * i] = q.x;
      v[4 * i + 1] = q.y;
      v[4 * i + 2] = q.z;
      v[4 * i + 3] = q.w;
    }
  } else if constexpr (kAlign >= 4) {
#pragma unroll
    for (int w = 0; w < N; ++w) v[w] = reinterpret_cast<const uint32_t*>(p)[w];
  } else {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
    const uint32_t* a = reinterpret_cast<const uint32_t*>(addr & ~uintptr_t{3});
    const uint32_t shift = static_cast<uint32_t>(addr & 2) * 8;
    uint32_t prev = a[0];
#pragma unroll
    for (int w = 0; w < N; ++w) {
      // The word past the run only where the run is shifted: an aligned run may end the buffer.
      const uint32_t next = w + 1 < N || shift != 0 ? a[w + 1] : 0u;
      v[w] = __funnelshift_r(prev, next, shift);
      prev = next;
    }
  }
}
__device__ __forceinline__ float Half(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(U16(p))));
}
// The four low bits of `bits` as four bytes of 0 or 1.
__device__ __forceinline__ uint32_t SpreadBits4(uint32_t bits) { return ((bits & 0xF) * 0x00204081u) & 0x01010101u; }
// Code book entries 4k .. 4k+3 as one little-endian word.
constexpr uint32_t Iq4Word(int k) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(kIq4Values[4 * k + i])) << (8 * i);
  return v;
}
inline constexpr uint32_t kIq4Words[4] = {Iq4Word(0), Iq4Word(1), Iq4Word(2), Iq4Word(3)};
// Four 4-bit indices (one per byte) looked up in the IQ4 code book (ggml_types.h's kIq4Values).
__device__ __forceinline__ uint32_t Iq4Lookup(uint32_t nibbles) {
  // The code book as 16 bytes; a byte permute picks from 8 at a time, bit 3 of each index chooses.
  constexpr uint32_t t0 = kIq4Words[0], t1 = kIq4Words[1], t2 = kIq4Words[2], t3 = kIq4Words[3];
  const uint32_t sel = ((nibbles | (nibbles >> 4)) & 0xFFu) | ((((nibbles >> 16) | (nibbles >> 20)) & 0xFFu) << 8);
  const uint32_t low = __byte_perm(t0, t1, sel & 0x7777u), high = __byte_perm(t2, t3, sel & 0x7777u);
  const uint32_t pick = ((nibbles >> 3) & 0x01010101u) * 0xFFu;
  return (low & ~pick) | (high & pick);
}

// Unit u (0 .. kUnits-1) of a block whose header (Parts) starts at `hd` and whose payload starts at
// `p`, its word runs on kAlign-byte boundaries. kStored: hd and p point into one stored block (the
// header's parts keep their stored offsets), else into split rows.
template <GgmlType T, int kAlign, bool kStored>
__device__ __forceinline__ Unit ReadUnitAt(const uint8_t* hd, const uint8_t* p, int u) {
  Unit r;
  r.min[0] = r.min[1] = 0.0f;
  if constexpr (T == GgmlType::kQ4_0 || T == GgmlType::kQ4_1 || T == GgmlType::kIQ4_NL) {
    constexpr bool has_min = T == GgmlType::kQ4_1;
    uint32_t qs[4];
    Words<4, kAlign>(p, qs);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      uint32_t lo = qs[w] & 0x0F0F0F0Fu, hi = (qs[w] >> 4) & 0x0F0F0F0Fu;
      if constexpr (T == GgmlType::kQ4_0) {
        lo = __vsub4(lo, 0x08080808u);
        hi = __vsub4(hi, 0x08080808u);
      } else if constexpr (T == GgmlType::kIQ4_NL) {
        lo = Iq4Lookup(lo);
        hi = Iq4Lookup(hi);
      }
      r.q[w] = lo;
      r.q[w + 4] = hi;
    }
    r.scale[0] = r.scale[1] = Half(hd);
    if constexpr (has_min) r.min[0] = r.min[1] = Half(hd + 2);
  } else if constexpr (T == GgmlType::kQ5_0 || T == GgmlType::kQ5_1) {
    constexpr bool has_min = T == GgmlType::kQ5_1;
    uint32_t words[5];  // qh, then qs
    Words<5, kAlign>(p, words);
    const uint32_t qh = words[0];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t v = words[1 + w];
      // Bit j of qh is weight j's fifth bit: word w holds weights 4w.. and word w + 4 weights 16 + 4w..
      uint32_t lo = (v & 0x0F0F0F0Fu) | (SpreadBits4(qh >> (4 * w)) << 4);
      uint32_t hi = ((v >> 4) & 0x0F0F0F0Fu) | (SpreadBits4(qh >> (16 + 4 * w)) << 4);
      if constexpr (!has_min) {
        lo = __vsub4(lo, 0x10101010u);
        hi = __vsub4(hi, 0x10101010u);
      }
      r.q[w] = lo;
      r.q[w + 4] = hi;
    }
    r.scale[0] = r.scale[1] = Half(hd);
    if constexpr (has_min) r.min[0] = r.min[1] = Half(hd + 2);
  } else if constexpr (T == GgmlType::kQ8_0) {
    Words<8, kAlign>(p, r.q);
    r.scale[0] = r.scale[1] = Half(hd);
  } else if constexpr (T == GgmlType::kQ2_K || T == GgmlType::kQ3_K) {
    // Weight 128h + 32s + i: bits 2s of qs[32h + i]; unit u = 4h + s.
    const int h = u / 4, s = u % 4;
    uint32_t qs[8], hmask[8];
    Words<8, kAlign>(p + (T == GgmlType::kQ2_K ? 0 : 32) + 32 * h, qs);
    if constexpr (T == GgmlType::kQ3_K) Words<8, kAlign>(p, hmask);
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      uint32_t q = (qs[w] >> (2 * s)) & 0x03030303u;
      if constexpr (T == GgmlType::kQ3_K) {
        // 4 is subtracted where bit u of hmask[i] is clear.
        const uint32_t high = (hmask[w] >> u) & 0x01010101u;
        q = __vsub4(q, (high ^ 0x01010101u) << 2);
      }
      r.q[w] = q;
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int g = 2 * u + k;
      if constexpr (T == GgmlType::kQ2_K) {
        // d and dmin: bytes 80-83 of the stored block, right after the scales in a split header.
        constexpr int kD = kStored ? 80 : 16;
        const uint32_t sc = hd[g];
        r.scale[k] = Half(hd + kD) * static_cast<float>(sc & 0xF);
        r.min[k] = -(Half(hd + kD + 2) * static_cast<float>(sc >> 4));
      } else {
        const uint8_t* sc = hd;
        const int lo = (sc[g % 8] >> (4 * (g / 8))) & 0xF, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
        r.scale[k] = Half(hd + 12) * static_cast<float>(static_cast<int8_t>(lo | hi << 4) - 32);
      }
    }
  } else if constexpr ((T == GgmlType::kQ4_K || T == GgmlType::kQ5_K) && !kStored) {
    // Split rows, re-laid per unit (RelayUnits): codes as Q4_1's / Q5_1's, scale and min from two bytes.
    uint32_t qs[4], qh[1] = {0};
    if constexpr (T == GgmlType::kQ5_K) Words<1, 4>(p + 4 * u, qh);
    Words<4, kAlign>(p + (T == GgmlType::kQ5_K ? 32 : 0) + 16 * u, qs);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      r.q[w] = (qs[w] & 0x0F0F0F0Fu) | (SpreadBits4(qh[0] >> (4 * w)) << 4);
      r.q[w + 4] = ((qs[w] >> 4) & 0x0F0F0F0Fu) | (SpreadBits4(qh[0] >> (16 + 4 * w)) << 4);
    }
    const uint32_t dm = *reinterpret_cast<const uint32_t*>(hd);  // d, dmin: the header's first 4 bytes
    const uint32_t s = hd[4 + u], m_high = (hd[12 + u / 2] >> (4 * (u % 2))) & 0xF;
    const float2 d = __half22float2(*reinterpret_cast<const __half2*>(&dm));
    r.scale[0] = r.scale[1] = d.x * static_cast<float>(s & 0x3F);
    r.min[0] = r.min[1] = -(d.y * static_cast<float>((s >> 6) | (m_high << 2)));
  } else if constexpr (T == GgmlType::kQ4_K || T == GgmlType::kQ5_K) {
    // Weight 32j + i: nibble (j % 2) of qs[32 (j / 2) + i] (and bit j of qh[i]); unit u = j.
    constexpr bool five = T == GgmlType::kQ5_K;
    uint32_t qs[8], qh[8];
    Words<8, kAlign>(p + (five ? 32 : 0) + 32 * (u / 2), qs);
    if constexpr (five) Words<8, kAlign>(p, qh);
    const int shift = 4 * (u % 2);
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      uint32_t q = (qs[w] >> shift) & 0x0F0F0F0Fu;
      if constexpr (five) q |= ((qh[w] >> u) & 0x01010101u) << 4;
      r.q[w] = q;
    }
    uint8_t sc, m;
    ScaleMinK4(hd + 4, u, sc, m);  // kernels/common/ggml_types.h
    r.scale[0] = r.scale[1] = Half(hd) * static_cast<float>(sc);
    r.min[0] = r.min[1] = -(Half(hd + 2) * static_cast<float>(m));
  } else if constexpr (T == GgmlType::kQ6_K) {
    // Weight 128h + 32s + i: nibble (s / 2) of ql[64h + 32(s % 2) + i], bits 2s of qh[32h + i].
    const int h = u / 4, s = u % 4;
    uint32_t ql[8], qh[8];
    Words<8, kAlign>(p + 64 * h + 32 * (s % 2), ql);
    Words<8, kAlign>(p + 128 + 32 * h, qh);
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const uint32_t lo = (ql[w] >> (4 * (s / 2))) & 0x0F0F0F0Fu;
      const uint32_t hi = (qh[w] >> (2 * s)) & 0x03030303u;
      r.q[w] = __vsub4(lo | (hi << 4), 0x20202020u);
    }
    const float d = Half(hd + 16);
    r.scale[0] = d * static_cast<float>(static_cast<int8_t>(hd[2 * u]));
    r.scale[1] = d * static_cast<float>(static_cast<int8_t>(hd[2 * u + 1]));
  } else if constexpr (T == GgmlType::kQ8_K) {
    Words<8, kAlign>(p + 32 * u, r.q);
    r.scale[0] = r.scale[1] = __uint_as_float(*reinterpret_cast<const uint32_t*>(hd));
  } else if constexpr (T == GgmlType::kIQ4_XS) {
    // Weight 32j + i: nibble (i / 16) of qs[16j + i % 16]; unit u = j.
    uint32_t qs[4];
    Words<4, kAlign>(p + 16 * u, qs);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      r.q[w] = Iq4Lookup(qs[w] & 0x0F0F0F0Fu);
      r.q[w + 4] = Iq4Lookup((qs[w] >> 4) & 0x0F0F0F0Fu);
    }
    const uint32_t sc = ((hd[4 + u / 2] >> (4 * (u % 2))) & 0xF) | (((U16(hd + 2) >> (2 * u)) & 3) << 4);
    r.scale[0] = r.scale[1] = Half(hd) * static_cast<float>(static_cast<int>(sc) - 32);
  }
  return r;
}

// Whether split rows of T are re-laid per unit after the split (RelayUnits): Q4_K and Q5_K, whose
// stored codes interleave two units' nibbles in each byte (and Q5_K's fifth bits all eight units'
// in each byte), so that a GEMV lane reading one unit loaded 32 (Q5_K: 64) code bytes for 16 (20),
// and whose 6-bit scales and mins take two or three byte loads and a branch per unit.
template <GgmlType T>
inline constexpr bool kRelaid = T == GgmlType::kQ4_K || T == GgmlType::kQ5_K;

// One split block of a kRelaid type re-laid in place: `hd` its 16-byte header (d, dmin, then the
// 12 bytes of 6-bit scales and mins as stored), `p` its payload (Q5_K: the 32 bytes of fifth bits,
// then the 128 of nibbles; Q4_K: the nibbles). Afterwards unit u's 32 codes are 16 bytes at
// p (+ 32 for Q5_K) + 16u as Q4_1 keeps them (byte i: weight i, and weight i + 16 in the high
// nibble), Q5_K's fifth bits one 32-bit word per unit at p + 4u (bit i: weight i), and the
// scales byte u (4 + u) is scale u | (min u & 3) << 6 with byte 12 + u / 2 holding min u >> 2 in
// nibble u % 2; d and dmin stay. The same values, the same bytes per block: ReadUnitAt reads them.
template <GgmlType T>
__device__ inline void RelayUnits(uint8_t* hd, uint8_t* p) {
  static_assert(kRelaid<T>, "Q4_K and Q5_K only");
  constexpr bool five = T == GgmlType::kQ5_K;
  uint8_t qs[128], sc[8], mn[8];
  uint32_t bits[8] = {};
  for (int i = 0; i < 128; ++i) qs[i] = p[(five ? 32 : 0) + i];
  if constexpr (five) {
    for (int i = 0; i < 32; ++i) {
      for (int u = 0; u < 8; ++u) bits[u] |= static_cast<uint32_t>((p[i] >> u) & 1) << i;
    }
  }
  for (int u = 0; u < 8; ++u) ScaleMinK4(hd + 4, u, sc[u], mn[u]);  // kernels/common/ggml_types.h
  for (int u = 0; u < 8; ++u) {
    for (int i = 0; i < 16; ++i) {
      const int shift = 4 * (u % 2);
      const uint32_t lo = (qs[32 * (u / 2) + i] >> shift) & 0xF, high = (qs[32 * (u / 2) + 16 + i] >> shift) & 0xF;
      p[(five ? 32 : 0) + 16 * u + i] = static_cast<uint8_t>(lo | high << 4);
    }
    if constexpr (five) {
      for (int k = 0; k < 4; ++k) p[4 * u + k] = static_cast<uint8_t>(bits[u] >> (8 * k));
    }
    hd[4 + u] = static_cast<uint8_t>(sc[u] | (mn[u] & 3) << 6);
  }
  for (int k = 0; k < 4; ++k) hd[12 + k] = static_cast<uint8_t>((mn[2 * k] >> 2) | (mn[2 * k + 1] >> 2) << 4);
}

// Unit u (0 .. kUnits-1) of the stored block at `b`.
template <GgmlType T>
__device__ __forceinline__ Unit ReadUnit(const uint8_t* b, int u) {
  using Pt = Parts<T>;
  return ReadUnitAt<T, Traits<T>::kAlign, true>(b + Pt::kHeaderAt, b + Pt::kPayloadAt, u);
}

// Unit u of a row of `units` units in the CUDA backend's layout of kept weights: split rows where
// Parts says so, else stored blocks. kWide: the row starts on 16 bytes and holds a multiple of 16
// bytes of payloads (RowsWide), so that payloads load in 16-byte (or 4-byte) pieces.
template <GgmlType T, bool kWide = false>
__device__ __forceinline__ Unit ReadRowUnit(const uint8_t* row, int units, int u) {
  using Tr = Traits<T>;
  using Pt = Parts<T>;
  if constexpr (Pt::kSplit) {
    constexpr int kAlign = kWide ? Pt::kWideAlign : Tr::kAlign;
    const int blocks = units / Tr::kUnits, b = u / Tr::kUnits;
    return ReadUnitAt<T, kAlign, false>(row + static_cast<int64_t>(Pt::kPayload) * blocks + Pt::kHeader * b,
                                        row + static_cast<int64_t>(Pt::kPayload) * b, u % Tr::kUnits);
  } else {
    return ReadUnit<T>(row + (u / Tr::kUnits) * Tr::kBlockBytes, u % Tr::kUnits);
  }
}

// Whether split rows of T at `base`, `row_bytes` apart, holding `units` units each, may be read
// with ReadRowUnit<T, true>.
template <GgmlType T>
bool RowsWide(const void* base, int64_t row_bytes, int64_t units) {
  if constexpr (!Parts<T>::kSplit) {
    return false;
  } else {
    const int64_t blocks = units / Traits<T>::kUnits;
    return reinterpret_cast<uintptr_t>(base) % 16 == 0 && row_bytes % 16 == 0 &&
           (Parts<T>::kPayload * blocks) % 16 == 0;
  }
}

// Byte i (0-3) of word v as a signed value.
__device__ __forceinline__ int Code(uint32_t v, int i) { return static_cast<int8_t>(v >> (8 * i)); }

// Weight 4w + i of the unit as the CPU decoder writes it: scale * q (+ min), each step rounded.
template <bool kHasMin>
__device__ __forceinline__ float Weight(const Unit& r, int w, int i) {
  const float v = __fmul_rn(r.scale[w / 4], static_cast<float>(Code(r.q[w], i)));
  return kHasMin ? __fadd_rn(v, r.min[w / 4]) : v;
}

}  // namespace kvs::cuda::ggml
