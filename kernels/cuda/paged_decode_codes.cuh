// Decode-only GQA attention for quantized KV caches (fp8 E4M3 and int8 with one scale per token
// and head, int4 with a scale and zero per 32 elements) whose tensor-core fragments are built
// straight from the raw codes in registers.
//
// Why a kernel of its own: the path it replaces staged the raw codes, decoded each tile into a
// second, fp16 tile in shared memory and read that back for the MMAs. Profiled on the H200 that
// was bound by the integer ALU with DRAM 37% busy, slower than bf16 though it reads half the
// bytes (docs/performance.md). Here every code is converted once, by byte permutes, into the very
// register the MMA consumes:
//  * K is the B operand of S = Q K^T, whose k index is the head dimension. A dot product does not
//    care in which order it sums dimensions, so lane (g, t) reads a contiguous quarter of key g's
//    row, dims [t D/4, (t+1) D/4): at k-step ks its MMA k indices {2t, 2t+1, 2t+8, 2t+9} stand for
//    dims t D/4 + 4 ks + {0, 1, 2, 3}, and the Q fragments are built in the same order.
//  * V is the B operand of O = P V, whose k index is the key: one register holds two keys' codes
//    of one dimension. Lane (g, t) reads D/8 contiguous codes of each of its four keys (2t, 2t+1,
//    2t+8, 2t+9) and interleaves pairs of keys with a byte permute; column g of n-tile n stands
//    for dim g D/8 + n, which MergeDecodeWarps undoes when it writes the output.
//  * Scales never touch the elements: S = s_k (Q . codes_k), and P_k s_v,k multiplies V's codes
//    (normalised by the tile's largest s_v so fp16 P stays in [0, 1]).
//  * int8 code c becomes fp16 1152 + c by putting its offset-binary byte under the exponent byte
//    0x64 (1024 + (c + 128)) — exact, and no subtraction per element: the resulting 1152 Σq shift
//    of every score is removed with the key's scale, and the 1152 Σp shift of every output once at
//    the end. fp8 codes convert with one cvt per pair (exact in fp16).
//  * int4 scales belong to groups of 32 dims, which the MMA's k sum would mix, so int4 codes are
//    decoded in registers instead: nibble | 0x6400 is fp16 1024 + c, then (h - 1024) * s + z by
//    two half2 instructions per pair. Every lane's K and V dims lie in one group, so it needs
//    one (s, z) per key. K's nibbles pair up as (e0, e4), (e1, e5), ... and Q follows that order.
//  * fp16 caches are already the MMA's type: the same kernel, no conversion but V's key pairing.
// Fragment layouts and the warp split are PagedDecodeMmaKernel's (paged_attention_kernels.cuh).
#pragma once

#include "kernels/cuda/paged_attention_common.cuh"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda {
namespace attention {

// int8: what every code carries after CodesToHalf2x2 (1024 from the exponent, 128 from the
// offset binary).
constexpr float kInt8CodeBias = 1152.0f;

// (x & mask) | bits in one LOP3: written as C the compiler keeps both constants as immediates and
// needs two (a LOP3 takes one).
template <uint32_t kMask, uint32_t kBits>
__device__ inline uint32_t AndOr(uint32_t x) {
  uint32_t y;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(y) : "r"(x), "n"(kMask), "n"(kBits));  // 0xea: (a & b) | c
  return y;
}

// Eight int4 codes of one row (nibble e = dim e) decoded with the group's (scale, zero) `sz` to
// the fp16 pairs (e0, e4), (e1, e5), (e2, e6), (e3, e7).
__device__ inline void Int4x8ToHalf2x4(uint32_t w, uint32_t sz, uint32_t* out) {
  const __half2 s = __low2half2(*reinterpret_cast<const __half2*>(&sz));
  const __half2 z = __high2half2(*reinterpret_cast<const __half2*>(&sz));
  const __half2 k1024 = __float2half2_rn(1024.0f);
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t x = AndOr<0x000f000fu, 0x64006400u>(w >> (4 * q));  // 1024 + c, exact
    const __half2 v = __hfma2(__hsub2(*reinterpret_cast<const __half2*>(&x), k1024), s, z);
    out[q] = *reinterpret_cast<const uint32_t*>(&v);
  }
}

// Eight int4 codes (dims 0..7) of two keys a and b, with their groups' scales `s` = (s_a, s_b)
// and zeros `z` -> out[j] = fp16 pair (a_j, b_j).
__device__ inline void KeyPairInt4ToHalf2x8(uint32_t a, uint32_t b, uint32_t s, uint32_t z, uint32_t* out) {
  const __half2 k1024 = __float2half2_rn(1024.0f);
  const __half2 sh = *reinterpret_cast<const __half2*>(&s), zh = *reinterpret_cast<const __half2*>(&z);
  constexpr uint32_t kSel[4] = {0x4400u, 0x5511u, 0x6622u, 0x7733u};  // byte j of a, byte j of b
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t x = __byte_perm(a, b, kSel[j]);
    const uint32_t lo = AndOr<0x000f000fu, 0x64006400u>(x), hi = AndOr<0x000f000fu, 0x64006400u>(x >> 4);
    const __half2 vl = __hfma2(__hsub2(*reinterpret_cast<const __half2*>(&lo), k1024), sh, zh);
    const __half2 vh = __hfma2(__hsub2(*reinterpret_cast<const __half2*>(&hi), k1024), sh, zh);
    out[2 * j] = *reinterpret_cast<const uint32_t*>(&vl);
    out[2 * j + 1] = *reinterpret_cast<const uint32_t*>(&vh);
  }
}

// kWords 32-bit words from shared memory, with the widest loads their count allows.
template <int kWords>
__device__ inline void LoadWords(const unsigned char* src, uint32_t* w) {
  if constexpr (kWords % 4 == 0) {
#pragma unroll
    for (int c = 0; c < kWords / 4; ++c) {
      const uint4 u = *reinterpret_cast<const uint4*>(src + 16 * c);
      w[4 * c] = u.x, w[4 * c + 1] = u.y, w[4 * c + 2] = u.z, w[4 * c + 3] = u.w;
    }
  } else if constexpr (kWords == 2) {
    const uint2 u = *reinterpret_cast<const uint2*>(src);
    w[0] = u.x, w[1] = u.y;
  } else {
    static_assert(kWords == 1, "1, 2 or a multiple of 4 words");
    w[0] = *reinterpret_cast<const uint32_t*>(src);
  }
}

// The head-dim element that entry j of lane t's Q fragment at k-step ks stands for (j = 0, 1: the
// a0/a1 pair, 2, 3: the a2/a3 pair) — the order in which K's codes reach the MMA.
template <KvDType F, int D>
__device__ inline int KDim(int t, int ks, int j) {
  if constexpr (F == KvDType::kINT4) {  // word ks / 2; nibble pairs (e0,e4) (e1,e5) | (e2,e6) (e3,e7)
    constexpr int kNibble[4] = {0, 4, 1, 5};
    return t * (D / 4) + 8 * (ks / 2) + 2 * (ks % 2) + kNibble[j];
  } else {
    return t * (D / 4) + 4 * ks + j;
  }
}

// Four codes of one row (dims 0..3, byte j = dim j) as fp16 pairs (0, 1) and (2, 3). int8 codes
// come out as 1152 + c, fp8 codes as their value.
template <KvDType F>
__device__ inline void CodesToHalf2x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  if constexpr (F == KvDType::kINT8) {
    const uint32_t u = w ^ 0x80808080u;         // offset binary: c + 128
    lo = __byte_perm(u, 0x64646464u, 0x4140);   // fp16 0x64uu = 1024 + uu, bytes 0 and 1
    hi = __byte_perm(u, 0x64646464u, 0x4342);   // bytes 2 and 3
  } else {
    lo = Fp8x2ToHalf2(w & 0xffffu);
    hi = Fp8x2ToHalf2(w >> 16);
  }
}

// Codes of dims 0..3 of two keys a and b -> out[j] = fp16 pair (a_j, b_j), as a B fragment of
// O = P V wants them.
template <KvDType F>
__device__ inline void KeyPairToHalf2x4(uint32_t a, uint32_t b, uint32_t* out) {
  CodesToHalf2x2<F>(__byte_perm(a, b, 0x5140), out[0], out[1]);  // a0 b0 a1 b1
  CodesToHalf2x2<F>(__byte_perm(a, b, 0x7362), out[2], out[3]);  // a2 b2 a3 b3
}

__device__ inline float HalfPairSum(uint32_t pair) {
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&pair));
  return f.x + f.y;
}

// Bytes per staged row: the codes, then 16 bytes for the scales (or, for fp16, padding that keeps
// the rows' fragment reads off one bank).
template <KvDType F, int D>
__host__ __device__ constexpr int CodesRowBytes() {
  return static_cast<int>(KvRowBytes(F, D)) + 16;
}

// Queues keys [base, base + 16) of K and V (codes, then the scales) into a warp's raw tiles. A warp
// instruction copies whole rows — lane L takes 16-byte chunk L % C of every (32 / C)-th row, C the
// row's chunks — so each row's address is computed C times fewer than chunk by chunk, and every
// copy instruction reads whole rows. Keys at or past k_hi are zero-filled.
template <KvDType F, int D>
__device__ inline void LoadCodesTile(unsigned char* k_raw, unsigned char* v_raw, const Params& p, const int32_t* blocks,
                                     int base, int k_hi, int kvh, int lane) {
  constexpr int kKeys = 16;
  constexpr int kRaw = CodesRowBytes<F, D>();
  constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
  constexpr int kScaleBytes = static_cast<int>(KvScaleBytes(F, D));
  static_assert(kScaleBytes <= 16, "scales fit the row's 16 spare bytes");
  constexpr int kChunks = kRowBytes / 16;        // 16-byte chunks of codes per row
  constexpr int kRowsPerCopy = 32 / kChunks;     // rows one warp instruction covers
  const TileRows tile = LocateTile<kKeys>(p, blocks, base, k_hi);
  const int chunk = lane % kChunks;
#pragma unroll
  for (int key = lane / kChunks; key < kKeys; key += kRowsPerCopy) {
    const bool valid = base + key < k_hi;
    const KvRow row = valid ? LocateInTile(p, blocks, tile, base, key, kvh) : KvRow{};
    CopyAsyncN<16>(k_raw + key * kRaw + chunk * 16, p.k_cache + row.codes + chunk * 16, valid);
    CopyAsyncN<16>(v_raw + key * kRaw + chunk * 16, p.v_cache + row.codes + chunk * 16, valid);
  }
  if constexpr (kScaleBytes > 0) {
    const int key = lane % kKeys;  // the scales: K's by lanes 0-15, V's by 16-31
    const bool valid = base + key < k_hi;
    const KvRow row = valid ? LocateInTile(p, blocks, tile, base, key, kvh) : KvRow{};
    CopyAsyncN<kScaleBytes>((lane < kKeys ? k_raw : v_raw) + key * kRaw + kRowBytes,
                            (lane < kKeys ? p.k_cache : p.v_cache) + row.scales, valid);
  }
}

// Dynamic shared memory of PagedDecodeCodesKernel<F, D>: [warp][stage][K|V] raw tiles of 16 rows.
template <KvDType F, int D>
__host__ __device__ constexpr size_t DecodeCodesSmemBytes() {
  return static_cast<size_t>(kThreads / 32) * 2 * 2 * 16 * CodesRowBytes<F, D>();
}

template <KvDType F, int D>
__global__ void __launch_bounds__(kThreads) PagedDecodeCodesKernel(Params p) {
  pdl::StartAfterPrevious();
  static_assert(F != KvDType::kBF16 && F != KvDType::kF32, "bf16 stages tiles (PagedDecodeMmaKernel)");
  constexpr int kKeys = 16;  // keys per warp tile
  constexpr int kWarps = kThreads / 32;
  constexpr int kKSteps = D / 16;  // k-steps of S = Q K^T
  constexpr int kNTiles = D / 8;   // n-tiles of O = P V
  constexpr bool kInt8 = F == KvDType::kINT8;
  constexpr bool kInt4 = F == KvDType::kINT4;
  constexpr bool kF16 = F == KvDType::kF16;           // values already in the MMA's type
  constexpr bool kFold = !kInt4 && !kF16;  // 8-bit: scales folded into S and P; int4 decodes in registers
  constexpr int kBits = kInt4 ? 4 : kF16 ? 16 : 8;
  constexpr int kKWords = D / 4 * kBits / 32;  // K words per lane and key (a quarter row)
  constexpr int kVWords = D / 8 * kBits / 32;  // V words per lane and key (an eighth of a row)
  constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
  constexpr int kRaw = CodesRowBytes<F, D>();
  constexpr int kRawTile = kKeys * kRaw;
  static_assert(DecodeCodesSmemBytes<F, D>() >= 16 * D * sizeof(float), "merge scratch");
  static_assert(kKWords >= 1 && kVWords >= 1, "head dims 64 and 128");
  extern __shared__ __align__(16) unsigned char codes_smem[];
  __shared__ float merge_ml[kWarps][16][2];

  const int seq = blockIdx.z, kvh = blockIdx.y, split = blockIdx.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int tok = p.query_start[seq];
  const int ctx = p.context_len[seq];
  const int group = p.q_heads / p.kv_heads;
  const int k_lo = split * p.keys_per_split;
  const int k_hi = min(ctx, k_lo + p.keys_per_split);
  const int32_t* blocks = p.block_table + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  // Q fragments in K's dimension order (rows = the group's heads, zero beyond), fp16, pre-scaled
  // for exp2. int8: the rows' sums of those fp16 values, for the 1152 shift of the scores.
  uint32_t qa[kKSteps][4];
  float bias_lo = 0.0f, bias_hi = 0.0f;
  {
    const bf16* q0 = p.q + static_cast<int64_t>(tok) * p.q_stride + static_cast<int64_t>(kvh) * group * D;
    auto qv = [&](int r, int d) { return r < group ? __bfloat162float(q0[r * D + d]) * p.scale_log2 : 0.0f; };
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int d0 = KDim<F, D>(t4, ks, 0), d1 = KDim<F, D>(t4, ks, 1);
      const int d2 = KDim<F, D>(t4, ks, 2), d3 = KDim<F, D>(t4, ks, 3);
      qa[ks][0] = PackHalf(qv(g, d0), qv(g, d1));
      qa[ks][1] = PackHalf(qv(g + 8, d0), qv(g + 8, d1));
      qa[ks][2] = PackHalf(qv(g, d2), qv(g, d3));
      qa[ks][3] = PackHalf(qv(g + 8, d2), qv(g + 8, d3));
      if constexpr (kInt8) {
        bias_lo += HalfPairSum(qa[ks][0]) + HalfPairSum(qa[ks][2]);
        bias_hi += HalfPairSum(qa[ks][1]) + HalfPairSum(qa[ks][3]);
      }
    }
    if constexpr (kInt8) {
      for (int off = 1; off < 4; off <<= 1) {
        bias_lo += __shfl_xor_sync(0xffffffffu, bias_lo, off);
        bias_hi += __shfl_xor_sync(0xffffffffu, bias_hi, off);
      }
      bias_lo *= kInt8CodeBias;
      bias_hi *= kInt8CodeBias;
    }
  }
  float o[kNTiles][4];
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_lo = -FLT_MAX, m_hi = -FLT_MAX, l_lo = 0.0f, l_hi = 0.0f;  // rows g and g + 8
  // o holds O / o_scale. o_scale follows the tiles' largest V scale, but moves only when a tile's
  // exceeds it or falls 2^8 below it: fp16 P * s_v / o_scale stays at most 1 and clear of fp16's
  // subnormals, and most tiles need no rescaling of o. int8: psum is this lane's share of sum(P)
  // as fed to the MMAs, rescaled like o (for the 1152 shift of O).
  float o_scale = 1.0f, psum_lo = 0.0f, psum_hi = 0.0f;

  auto raw_tile = [&](int stage, int kv) { return codes_smem + ((warp * 2 + stage) * 2 + kv) * kRawTile; };
  auto load = [&](int stage, int base) {
    LoadCodesTile<F, D>(raw_tile(stage, 0), raw_tile(stage, 1), p, blocks, base, k_hi, kvh, lane);
    CopyAsyncCommit();
  };
  constexpr int kStride = kWarps * kKeys;
  if (k_lo + warp * kKeys < k_hi) load(0, k_lo + warp * kKeys);
  int stage = 0;
  for (int base = k_lo + warp * kKeys; base < k_hi; base += kStride, stage ^= 1) {
    if (base + kStride < k_hi) {
      load(stage ^ 1, base + kStride);
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncwarp();
    const unsigned char* const k_raw = raw_tile(stage, 0);
    const unsigned char* const v_raw = raw_tile(stage, 1);

    // S = Q K^T: n-tile nt holds keys nt * 8 + g; this lane converts a quarter of key g's row.
    float sc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const unsigned char* row = k_raw + (nt * 8 + g) * kRaw;
      uint32_t w[kKWords];
      LoadWords<kKWords>(row + t4 * kKWords * 4, w);
      if constexpr (kInt4) {  // the lane's dims are group t D / 128; word i feeds k-steps 2i, 2i+1
        const uint32_t sz = *reinterpret_cast<const uint32_t*>(row + kRowBytes + 4 * (t4 * D / 128));
#pragma unroll
        for (int i = 0; i < kKWords; ++i) {
          uint32_t h[4];
          Int4x8ToHalf2x4(w[i], sz, h);
          MmaF16(sc[nt], qa[2 * i], h[0], h[1]);
          MmaF16(sc[nt], qa[2 * i + 1], h[2], h[3]);
        }
      } else if constexpr (kF16) {  // words 2 ks, 2 ks + 1 are dims 4 ks + (0, 1), (2, 3)
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) MmaF16(sc[nt], qa[ks], w[2 * ks], w[2 * ks + 1]);
      } else {
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          uint32_t b0, b1;
          CodesToHalf2x2<F>(w[ks], b0, b1);
          MmaF16(sc[nt], qa[ks], b0, b1);
        }
      }
    }
    // 8-bit: the scales of this lane's S columns, keys nt * 8 + 2 t + j; S = (S' - shift) * s_k.
    float sv[2][2] = {{1, 1}, {1, 1}};
    if constexpr (kFold) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = nt * 8 + 2 * t4 + j;
          const float sk = *reinterpret_cast<const float*>(k_raw + key * kRaw + kRowBytes);
          sv[nt][j] = *reinterpret_cast<const float*>(v_raw + key * kRaw + kRowBytes);
          sc[nt][j] = (sc[nt][j] - bias_lo) * sk;
          sc[nt][2 + j] = (sc[nt][2 + j] - bias_hi) * sk;
        }
      }
    }
    // Mask keys past the range, then the online softmax per row (a row lives in one quad).
    float c_lo, c_hi;
    DecodeTileSoftmax(sc, base, k_hi, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi);

    // P (16 rows x 16 keys) from the S fragments, each key's column times s_v / o_scale. A quad
    // holds all 16 keys, so smax (and with it o_scale) is the same in every lane.
    float rescale = 1.0f;
    if constexpr (kFold) {
      float smax = fmaxf(fmaxf(sv[0][0], sv[0][1]), fmaxf(sv[1][0], sv[1][1]));
      for (int off = 1; off < 4; off <<= 1) smax = fmaxf(smax, __shfl_xor_sync(0xffffffffu, smax, off));
      if (smax > o_scale || smax < o_scale * (1.0f / 256.0f)) {
        smax = smax > 0.0f ? smax : 1.0f;
        rescale = o_scale / smax;
        o_scale = smax;
      }
      const float inv_scale = __frcp_rn(o_scale);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const float a = sv[nt][0] * inv_scale, b = sv[nt][1] * inv_scale;
        sc[nt][0] *= a, sc[nt][2] *= a;
        sc[nt][1] *= b, sc[nt][3] *= b;
      }
    }
    uint32_t pa[4];
    pa[0] = PackHalf(sc[0][0], sc[0][1]);
    pa[1] = PackHalf(sc[0][2], sc[0][3]);
    pa[2] = PackHalf(sc[1][0], sc[1][1]);
    pa[3] = PackHalf(sc[1][2], sc[1][3]);
    const float oc_lo = c_lo * rescale, oc_hi = c_hi * rescale;
    if constexpr (kInt8) {
      psum_lo = psum_lo * oc_lo + HalfPairSum(pa[0]) + HalfPairSum(pa[2]);
      psum_hi = psum_hi * oc_hi + HalfPairSum(pa[1]) + HalfPairSum(pa[3]);
    }
    if (__any_sync(0xffffffffu, oc_lo != 1.0f || oc_hi != 1.0f)) {  // most tiles: no new max, same o_scale
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
        o[n][0] *= oc_lo;
        o[n][1] *= oc_lo;
        o[n][2] *= oc_hi;
        o[n][3] *= oc_hi;
      }
    }

    // O += P V: this lane's keys are 2t, 2t+1 (S n-tile 0) and 2t+8, 2t+9 (n-tile 1), D/8 codes
    // of each from dim g D/8; n-tile n is dim g D/8 + n.
    uint32_t va[4][kVWords], vsz[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const unsigned char* row = v_raw + ((k >> 1) * 8 + 2 * t4 + (k & 1)) * kRaw;
      LoadWords<kVWords>(row + g * kVWords * 4, va[k]);
      if constexpr (kInt4) vsz[k] = *reinterpret_cast<const uint32_t*>(row + kRowBytes + 4 * (g * D / 256));
    }
#pragma unroll
    for (int w = 0; w < kVWords; ++w) {
      if constexpr (kInt4) {  // a word is 8 dims: n-tiles 8 w .. 8 w + 7
        uint32_t b0[8], b1[8];
        KeyPairInt4ToHalf2x8(va[0][w], va[1][w], __byte_perm(vsz[0], vsz[1], 0x5410), __byte_perm(vsz[0], vsz[1], 0x7632), b0);
        KeyPairInt4ToHalf2x8(va[2][w], va[3][w], __byte_perm(vsz[2], vsz[3], 0x5410), __byte_perm(vsz[2], vsz[3], 0x7632), b1);
#pragma unroll
        for (int j = 0; j < 8; ++j) MmaF16(o[8 * w + j], pa, b0[j], b1[j]);
      } else if constexpr (kF16) {  // a word is 2 dims: n-tiles 2 w, 2 w + 1
        MmaF16(o[2 * w], pa, __byte_perm(va[0][w], va[1][w], 0x5410), __byte_perm(va[2][w], va[3][w], 0x5410));
        MmaF16(o[2 * w + 1], pa, __byte_perm(va[0][w], va[1][w], 0x7632), __byte_perm(va[2][w], va[3][w], 0x7632));
      } else {  // a word is 4 dims: n-tiles 4 w .. 4 w + 3
        uint32_t b0[4], b1[4];
        KeyPairToHalf2x4<F>(va[0][w], va[1][w], b0);
        KeyPairToHalf2x4<F>(va[2][w], va[3][w], b1);
#pragma unroll
        for (int j = 0; j < 4; ++j) MmaF16(o[4 * w + j], pa, b0[j], b1[j]);
      }
    }
    __syncwarp();  // this stage is consumed before the load two tiles on overwrites it
  }

  if constexpr (kInt8) {  // remove the 1152 sum(P) every output of the row carries
    for (int off = 1; off < 4; off <<= 1) {
      psum_lo += __shfl_xor_sync(0xffffffffu, psum_lo, off);
      psum_hi += __shfl_xor_sync(0xffffffffu, psum_hi, off);
    }
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
      o[n][0] -= kInt8CodeBias * psum_lo, o[n][1] -= kInt8CodeBias * psum_lo;
      o[n][2] -= kInt8CodeBias * psum_hi, o[n][3] -= kInt8CodeBias * psum_hi;
    }
  }
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] *= o_scale, o[n][1] *= o_scale, o[n][2] *= o_scale, o[n][3] *= o_scale;
  MergeDecodeWarps<D, kNTiles>(p, o, m_lo, l_lo, m_hi, l_hi, reinterpret_cast<float*>(codes_smem), merge_ml, tok, kvh,
                               split, [](int n, int col) { return col * (D / 8) + n; });
}

}  // namespace attention
}  // namespace kvs::cuda
