// Decode attention over the channel-quantized caches (int4 / int2, kernels/common/kv_format.h) on
// tensor cores: the design of the int4-token kernel (paged_decode_codes.cuh), whose fragment
// layouts, warp split and merge this file shares, for keys quantized per channel.
//
// Why: the CUDA-core kernel (paged_attention_kivi.cu) is bound by instructions, 3.3x slower than
// int4-token at 8 x 128K (docs/performance.md). Here a block owns (key split, KV head, sequence);
// the GQA group's query heads are the M rows of mma.m16n8k16 and each warp walks 16-key tiles:
//  * A 16-key tile lies in one cache block (block_size a multiple of 16) and is sealed or in the
//    sequence's bf16 ring as a whole (sealed positions end on a block boundary; the sink is block
//    0), so what a tile is reading is decided once per tile, by the whole warp.
//  * Sealed tiles stream in by cp.async, two stages per warp: K's and V's codes, V's per-token
//    (scale, zero) pairs, and the block's per-channel (scale, zero) pairs of K.
//  * K is the B operand of S = Q K^T. Lane (g, t) converts a quarter of key g's row, dims
//    [t D/4, (t + 1) D/4). A 32-bit word of codes gives fp16 pairs (e, e + n/2) of its n codes
//    by a shift and one LOP3 (code | 0x6400 = 1024 + code, exact); each pair becomes
//    (code - 1024 + 1024) * s + z with its channels' scales and zeros (one HSUB2, one HFMA2) —
//    the channel scales are per block, so both keys a lane converts share them. The Q fragments
//    are built in the same dimension order (KDim), so the k sum is unchanged.
//  * V is the B operand of O = P V (key pairs in a register), decoded like int4-token's values:
//    per-token groups of 32 dims, one (scale, zero) per key and lane.
//  * Ring tiles (the newest tokens, and the sink where the sequence holds it) read bf16 rows
//    straight into fragments: at most (ring blocks + 1) tiles of a sequence's thousands.
// Keys outside [window start, split end) are masked; unused ring keys and slots past the context
// are zero-filled, never read, so poisoned memory cannot reach a sum.
#include "kernels/cuda/attention_combine.cuh"
#include "kernels/cuda/paged_decode_codes.cuh"

namespace kvs::cuda {
namespace attention {
namespace {

struct KiviDecodeParams {
  Params p;  // codes, block table, splits and outputs, as the tiled kernels take them
  const bf16* k_residual;
  const bf16* v_residual;
  KvResidualRing ring;
  const int32_t* residual;  // [num_seqs]: the sequence's ring (< 0: none)
  const int32_t* sealed;    // [num_seqs] or nullptr
  const int32_t* sink;      // [num_seqs] or nullptr
  int32_t window;
};

// How kBits-bit codes sit in a 32-bit word (low first) and reach the MMA.
template <int kBits>
struct KiviCodes {
  static constexpr int kPerWord = 32 / kBits;          // codes per word
  static constexpr int kPairs = kPerWord / 2;          // fp16 pairs per word: codes (r, r + kPairs)
  static constexpr int kKStepsPerWord = kPerWord / 4;  // a k-step takes two pairs of a lane
  static constexpr uint32_t kMask = ((1u << kBits) - 1) * 0x00010001u;
};

// Pair r of a word: codes r and r + kPairs as fp16 (1024 + code) in the low and high halves.
template <int kBits>
__device__ inline uint32_t CodePair(uint32_t word, int r) {
  return AndOr<KiviCodes<kBits>::kMask, 0x64006400u>(word >> (kBits * r));
}

// (x - 1024) * s + z on fp16 pairs: the codes of CodePair to values.
__device__ inline uint32_t PairValue(uint32_t x, uint32_t s, uint32_t z) {
  const __half2 v = __hfma2(__hsub2(*reinterpret_cast<const __half2*>(&x), __float2half2_rn(1024.0f)),
                            *reinterpret_cast<const __half2*>(&s), *reinterpret_cast<const __half2*>(&z));
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The head-dim element, relative to lane t's quarter [t D/4, (t + 1) D/4), that entry j of its Q
// fragment at k-step ks stands for (j = 0, 1: the low and high half of b0; 2, 3: of b1).
template <int kBits>
__host__ __device__ constexpr int KiviKDim(int ks, int j) {
  using C = KiviCodes<kBits>;
  const int word = ks / C::kKStepsPerWord, u = ks % C::kKStepsPerWord;
  return word * C::kPerWord + 2 * u + (j >= 2 ? 1 : 0) + (j % 2) * C::kPairs;
}

template <int kBits, int D>
struct KiviTile {
  static constexpr int kKeys = 16;
  static constexpr int kRowBytes = D * kBits / 8;
  static constexpr int kVScaleBytes = D / kKvInt4Group * 4;  // a value row's (scale, zero) pairs
  static constexpr int kRaw = kRowBytes + 16;                // staged row: codes, then V's scales
  static constexpr int kChannelBytes = D * 4;                // K's (scale, zero) per channel
  static constexpr int kStageBytes = 2 * kKeys * kRaw + kChannelBytes;
  static constexpr int kKWords = D / 4 * kBits / 32;  // K words per lane and key (a quarter row)
  static constexpr int kVBytes = D / 8 * kBits / 8;   // V bytes per lane and key (an eighth of a row)
  static constexpr int kVWords = (kVBytes + 3) / 4;
  static_assert(kRowBytes % 16 == 0 && kKWords >= 1 && kVBytes >= 2, "head dims 64 and 128");
};

template <int kBits, int D>
__host__ __device__ constexpr size_t KiviDecodeSmemBytes() {
  return static_cast<size_t>(kThreads / 32) * 2 * KiviTile<kBits, D>::kStageBytes;
}

// Queues sealed keys [base, base + 16) of KV head kvh: K and V codes, V's row scales, K's channel
// scales. The tile lies in one block; keys outside [first, k_hi) are zero-filled.
template <int kBits, int D>
__device__ inline void LoadSealedTile(unsigned char* stage, const Params& p, const int32_t* blocks, int base, int first,
                                      int k_hi, int kvh, int lane) {
  using T = KiviTile<kBits, D>;
  const int block_index = BlockIndex(p, base);
  const int slot0 = base - block_index * p.block_size;
  const int64_t block = static_cast<int64_t>(blocks[block_index]) * p.block_bytes;
  const unsigned char* kb = p.k_cache + block;
  const unsigned char* vb = p.v_cache + block;
  const uint32_t scales0 = static_cast<uint32_t>(p.block_size * p.kv_heads * T::kRowBytes);
  unsigned char* k_st = stage;
  unsigned char* v_st = stage + T::kKeys * T::kRaw;
  unsigned char* c_st = stage + 2 * T::kKeys * T::kRaw;
  constexpr int kChunks = T::kRowBytes / 16;
#pragma unroll
  for (int i = lane; i < T::kKeys * kChunks; i += 32) {
    const int key = i / kChunks, c = i % kChunks;
    const bool valid = base + key >= first && base + key < k_hi;
    const uint32_t row = static_cast<uint32_t>((slot0 + key) * p.kv_heads + kvh);
    CopyAsyncN<16>(k_st + key * T::kRaw + c * 16, kb + row * T::kRowBytes + c * 16, valid);
    CopyAsyncN<16>(v_st + key * T::kRaw + c * 16, vb + row * T::kRowBytes + c * 16, valid);
  }
  if (lane < T::kKeys) {
    const int key = lane;
    const bool valid = base + key >= first && base + key < k_hi;
    const uint32_t row = static_cast<uint32_t>((slot0 + key) * p.kv_heads + kvh);
    CopyAsyncN<T::kVScaleBytes>(v_st + key * T::kRaw + T::kRowBytes, vb + scales0 + row * T::kVScaleBytes, valid);
  }
  const unsigned char* channel = kb + scales0 + static_cast<uint32_t>(kvh) * T::kChannelBytes;
  for (int i = lane; i < T::kChannelBytes / 16; i += 32) CopyAsyncN<16>(c_st + 16 * i, channel + 16 * i, true);
}

// S of a sealed tile: n-tile nt holds keys nt * 8 + g; this lane converts a quarter of key g's row
// with its channels' scales.
template <int kBits, int D>
__device__ inline void SealedScores(const unsigned char* stage, const uint32_t (&qa)[D / 16][4], float (&sc)[2][4],
                                    int g, int t4) {
  using T = KiviTile<kBits, D>;
  using C = KiviCodes<kBits>;
  const unsigned char* k_st = stage;
  const unsigned char* c_st = stage + 2 * T::kKeys * T::kRaw + t4 * (D / 4) * 4;
  uint32_t w[2][T::kKWords];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) LoadWords<T::kKWords>(k_st + (nt * 8 + g) * T::kRaw + t4 * T::kKWords * 4, w[nt]);
#pragma unroll
  for (int i = 0; i < T::kKWords; ++i) {
    uint32_t cs[C::kPerWord];  // (scale, zero) of the word's channels
    LoadWords<C::kPerWord>(c_st + i * C::kPerWord * 4, cs);
#pragma unroll
    for (int u = 0; u < C::kKStepsPerWord; ++u) {
      uint32_t s[2], z[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = 2 * u + h;
        s[h] = __byte_perm(cs[r], cs[r + C::kPairs], 0x5410);
        z[h] = __byte_perm(cs[r], cs[r + C::kPairs], 0x7632);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const uint32_t b0 = PairValue(CodePair<kBits>(w[nt][i], 2 * u), s[0], z[0]);
        const uint32_t b1 = PairValue(CodePair<kBits>(w[nt][i], 2 * u + 1), s[1], z[1]);
        MmaF16(sc[nt], qa[i * C::kKStepsPerWord + u], b0, b1);
      }
    }
  }
}

// One bf16 element of a row held as words (element e: word e / 2, half e % 2) as a float.
__device__ inline float Bf16Of(const uint32_t* words, int e) {
  const uint32_t w = words[e / 2];
  return __uint_as_float(e % 2 == 0 ? w << 16 : w & 0xffff0000u);
}

// S of a ring tile: bf16 keys, converted to fp16 in the Q fragments' dimension order.
template <int kBits, int D>
__device__ inline void RingScores(const KiviDecodeParams& kp, int64_t ring, int base, int first, int k_hi, int kvh,
                                  const uint32_t (&qa)[D / 16][4], float (&sc)[2][4], int g, int t4) {
  const int64_t width = static_cast<int64_t>(kp.p.kv_heads) * D;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    const int key = base + nt * 8 + g;
    uint32_t w[D / 8] = {};  // dims [t D/4, (t + 1) D/4) as bf16 pairs
    if (key >= first && key < k_hi) {
      const uint4* row = reinterpret_cast<const uint4*>(kp.k_residual + kp.ring.Slot(ring, key) * width +
                                                        static_cast<int64_t>(kvh) * D + t4 * (D / 4));
#pragma unroll
      for (int c = 0; c < D / 32; ++c) {
        const uint4 u = row[c];
        w[4 * c] = u.x, w[4 * c + 1] = u.y, w[4 * c + 2] = u.z, w[4 * c + 3] = u.w;
      }
    }
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const uint32_t b0 = PackHalf(Bf16Of(w, KiviKDim<kBits>(ks, 0)), Bf16Of(w, KiviKDim<kBits>(ks, 1)));
      const uint32_t b1 = PackHalf(Bf16Of(w, KiviKDim<kBits>(ks, 2)), Bf16Of(w, KiviKDim<kBits>(ks, 3)));
      MmaF16(sc[nt], qa[ks], b0, b1);
    }
  }
}

// O += P V over a sealed tile. This lane's keys are 2t, 2t+1 (S n-tile 0) and 2t+8, 2t+9 (n-tile
// 1), D/8 codes of each from dim g D/8, all in one 32-wide value group; n-tile n is dim g D/8 + n.
template <int kBits, int D>
__device__ inline void SealedValues(const unsigned char* stage, const uint32_t (&pa)[4], float (&o)[D / 8][4], int g,
                                    int t4) {
  using T = KiviTile<kBits, D>;
  constexpr int kPerByte = 8 / kBits;
  const unsigned char* v_st = stage + T::kKeys * T::kRaw;
  uint32_t va[4][T::kVWords], vsz[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const unsigned char* row = v_st + ((k >> 1) * 8 + 2 * t4 + (k & 1)) * T::kRaw;
    if constexpr (T::kVBytes >= 4) {
      LoadWords<T::kVWords>(row + g * T::kVBytes, va[k]);
    } else {
      va[k][0] = *reinterpret_cast<const uint16_t*>(row + g * T::kVBytes);
    }
    vsz[k] = *reinterpret_cast<const uint32_t*>(row + T::kRowBytes + 4 * (g * D / 256));
  }
  // (s_a, s_b) and (z_a, z_b) of the key pairs (0, 1) and (2, 3).
  const uint32_t s01 = __byte_perm(vsz[0], vsz[1], 0x5410), z01 = __byte_perm(vsz[0], vsz[1], 0x7632);
  const uint32_t s23 = __byte_perm(vsz[2], vsz[3], 0x5410), z23 = __byte_perm(vsz[2], vsz[3], 0x7632);
  constexpr uint32_t kSel[4] = {0x4400u, 0x5511u, 0x6622u, 0x7733u};  // byte j of a, byte j of b
#pragma unroll
  for (int byte = 0; byte < T::kVBytes; ++byte) {
    const int w = byte / 4, j = byte % 4;
    const uint32_t x01 = __byte_perm(va[0][w], va[1][w], kSel[j]);
    const uint32_t x23 = __byte_perm(va[2][w], va[3][w], kSel[j]);
#pragma unroll
    for (int k = 0; k < kPerByte; ++k) {
      const uint32_t b0 = PairValue(AndOr<KiviCodes<kBits>::kMask, 0x64006400u>(x01 >> (kBits * k)), s01, z01);
      const uint32_t b1 = PairValue(AndOr<KiviCodes<kBits>::kMask, 0x64006400u>(x23 >> (kBits * k)), s23, z23);
      MmaF16(o[byte * kPerByte + k], pa, b0, b1);
    }
  }
}

// O += P V over a ring tile: the lane's four keys' bf16 values of dims [g D/8, (g + 1) D/8).
template <int D>
__device__ inline void RingValues(const KiviDecodeParams& kp, int64_t ring, int base, int first, int k_hi, int kvh,
                                  const uint32_t (&pa)[4], float (&o)[D / 8][4], int g, int t4) {
  const int64_t width = static_cast<int64_t>(kp.p.kv_heads) * D;
  uint32_t v[4][D / 16];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int key = base + (k >> 1) * 8 + 2 * t4 + (k & 1);
#pragma unroll
    for (int i = 0; i < D / 16; ++i) v[k][i] = 0;
    if (key >= first && key < k_hi) {
      const uint4* row = reinterpret_cast<const uint4*>(kp.v_residual + kp.ring.Slot(ring, key) * width +
                                                        static_cast<int64_t>(kvh) * D + g * (D / 8));
#pragma unroll
      for (int c = 0; c < D / 64; ++c) {
        const uint4 u = row[c];
        v[k][4 * c] = u.x, v[k][4 * c + 1] = u.y, v[k][4 * c + 2] = u.z, v[k][4 * c + 3] = u.w;
      }
    }
  }
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    MmaF16(o[n], pa, PackHalf(Bf16Of(v[0], n), Bf16Of(v[1], n)), PackHalf(Bf16Of(v[2], n), Bf16Of(v[3], n)));
  }
}

template <int kBits, int D>
__global__ void __launch_bounds__(kThreads) KiviDecodeMmaKernel(KiviDecodeParams kp) {
  using T = KiviTile<kBits, D>;
  constexpr int kKeys = T::kKeys;
  constexpr int kWarps = kThreads / 32;
  constexpr int kKSteps = D / 16;
  constexpr int kNTiles = D / 8;
  static_assert(KiviDecodeSmemBytes<kBits, D>() >= 16 * D * sizeof(float), "merge scratch");
  extern __shared__ __align__(16) unsigned char kivi_smem[];
  __shared__ float merge_ml[kWarps][16][2];
  const Params& p = kp.p;

  const int seq = blockIdx.z, kvh = blockIdx.y, split = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int tok = p.query_start[seq];
  const int ctx = p.context_len[seq];
  const int group = p.q_heads / p.kv_heads;
  const int first = kp.window > 0 ? max(0, ctx - kp.window) : 0;  // the query is at position ctx - 1
  const int k_lo = split * p.keys_per_split;
  const int k_hi = min(ctx, k_lo + p.keys_per_split);
  const int32_t* blocks = p.block_table + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int sealed_end = max(kp.sealed != nullptr ? kp.sealed[seq] : 0, kp.ring.SealedEnd(ctx));
  const int64_t ring = kp.residual != nullptr ? kp.residual[seq] : -1;
  const bool holds_sink = kp.sink != nullptr && kp.sink[seq] != 0;
  // Whether the tile from `base` is read from the ring (sealed_end and the sink's end are block
  // boundaries, so a tile is all ring or all sealed).
  auto ring_tile = [&](int base) { return kp.ring.Reads(base, sealed_end, holds_sink); };

  // Q fragments in K's dimension order (rows = the group's heads, zero beyond), fp16, pre-scaled
  // for exp2.
  uint32_t qa[kKSteps][4];
  {
    const bf16* q0 = p.q + static_cast<int64_t>(tok) * p.q_stride + static_cast<int64_t>(kvh) * group * D;
    auto qv = [&](int r, int d) { return r < group ? __bfloat162float(q0[r * D + d]) * p.scale_log2 : 0.0f; };
    const int d_lane = t4 * (D / 4);
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int d0 = d_lane + KiviKDim<kBits>(ks, 0), d1 = d_lane + KiviKDim<kBits>(ks, 1);
      const int d2 = d_lane + KiviKDim<kBits>(ks, 2), d3 = d_lane + KiviKDim<kBits>(ks, 3);
      qa[ks][0] = PackHalf(qv(g, d0), qv(g, d1));
      qa[ks][1] = PackHalf(qv(g + 8, d0), qv(g + 8, d1));
      qa[ks][2] = PackHalf(qv(g, d2), qv(g, d3));
      qa[ks][3] = PackHalf(qv(g + 8, d2), qv(g + 8, d3));
    }
  }
  float o[kNTiles][4];
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_lo = -FLT_MAX, m_hi = -FLT_MAX, l_lo = 0.0f, l_hi = 0.0f;  // rows g and g + 8

  auto stage_at = [&](int stage) { return kivi_smem + (warp * 2 + stage) * T::kStageBytes; };
  auto load = [&](int stage, int base) {
    if (!ring_tile(base)) LoadSealedTile<kBits, D>(stage_at(stage), p, blocks, base, first, k_hi, kvh, lane);
    CopyAsyncCommit();  // an empty group for a ring tile keeps the two-deep count
  };
  constexpr int kStride = kWarps * kKeys;
  const int start = max(k_lo, first / kKeys * kKeys) + warp * kKeys;
  if (start < k_hi) load(0, start);
  int stage = 0;
  for (int base = start; base < k_hi; base += kStride, stage ^= 1) {
    if (base + kStride < k_hi) {
      load(stage ^ 1, base + kStride);
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncwarp();
    const bool from_ring = ring_tile(base);
    if (from_ring && ring < 0) continue;  // no ring: none of these keys can be read
    float sc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    if (from_ring) {
      RingScores<kBits, D>(kp, ring, base, first, k_hi, kvh, qa, sc, g, t4);
    } else {
      SealedScores<kBits, D>(stage_at(stage), qa, sc, g, t4);
    }
    // Keys outside [first, k_hi) are masked; then the online softmax per row (a row is one quad).
    if (base < first || base + kKeys > k_hi) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int key = base + nt * 8 + 2 * t4 + j;
          if (key < first || key >= k_hi) sc[nt][j] = sc[nt][2 + j] = -FLT_MAX;
        }
      }
    }
    float c_lo, c_hi;
    FragmentSoftmax<2>(sc, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi);
    uint32_t pa[4];
    pa[0] = PackHalf(sc[0][0], sc[0][1]);
    pa[1] = PackHalf(sc[0][2], sc[0][3]);
    pa[2] = PackHalf(sc[1][0], sc[1][1]);
    pa[3] = PackHalf(sc[1][2], sc[1][3]);
    if (__any_sync(0xffffffffu, c_lo != 1.0f || c_hi != 1.0f)) {  // most tiles: no new max
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
        o[n][0] *= c_lo;
        o[n][1] *= c_lo;
        o[n][2] *= c_hi;
        o[n][3] *= c_hi;
      }
    }
    if (from_ring) {
      RingValues<D>(kp, ring, base, first, k_hi, kvh, pa, o, g, t4);
    } else {
      SealedValues<kBits, D>(stage_at(stage), pa, o, g, t4);
    }
    __syncwarp();  // this stage is consumed before the load two tiles on overwrites it
  }
  MergeDecodeWarps<D, kNTiles>(p, o, m_lo, l_lo, m_hi, l_hi, reinterpret_cast<float*>(kivi_smem), merge_ml, tok, kvh,
                               split, [](int n, int col) { return col * (D / 8) + n; });
}

template <int kBits, int D>
cudaError_t Launch(KiviDecodeParams kp, int num_seqs, cudaStream_t stream) {
  constexpr size_t kSmem = KiviDecodeSmemBytes<kBits, D>();
  static_assert(kSmem <= 48 * 1024, "no opt-in shared memory needed");
  static const int64_t resident = ResidentBlocks(KiviDecodeMmaKernel<kBits, D>, kSmem, kp.p.num_sms);
  dim3 grid(1, kp.p.kv_heads, num_seqs);
  PlanSplits(kp.p, grid, resident, D);
  KiviDecodeMmaKernel<kBits, D><<<grid, kThreads, kSmem, stream>>>(kp);
  return CombineSplits<D>(cudaGetLastError(), kp.p, stream);
}

}  // namespace
}  // namespace attention

cudaError_t LaunchKiviDecodeMma(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                const AttentionWorkspace& ws, cudaStream_t stream) {
  if (batch.num_tokens == 0) return cudaSuccess;
  if (cache.kv_heads <= 0 || q_heads % cache.kv_heads != 0 || batch.max_query_len != 1 ||
      !KiviDecodeMmaSupports(cache.dtype, cache.head_dim, cache.block_size, q_heads / cache.kv_heads) ||
      cache.k_residual == nullptr) {
    return cudaErrorInvalidValue;
  }
  attention::KiviDecodeParams kp{};
  kp.p = attention::MakeParams(q, q_stride, q_heads, cache, batch, scale, out, out_stride, ws);
  kp.p.row_chunks = 1;
  if (ws.partial_out == nullptr || ws.partial_ml == nullptr) kp.p.workspace_floats = 0;  // no splits
  kp.k_residual = static_cast<const bf16*>(cache.k_residual);
  kp.v_residual = static_cast<const bf16*>(cache.v_residual);
  kp.ring = cache.ring();
  kp.residual = batch.residual;
  kp.sealed = batch.sealed;
  kp.sink = batch.sink;
  kp.window = cache.window;
  const bool two_bit = cache.dtype == KvDType::kKivi2;
  if (cache.head_dim == 64) {
    return two_bit ? attention::Launch<2, 64>(kp, batch.num_seqs, stream)
                   : attention::Launch<4, 64>(kp, batch.num_seqs, stream);
  }
  return two_bit ? attention::Launch<2, 128>(kp, batch.num_seqs, stream)
                 : attention::Launch<4, 128>(kp, batch.num_seqs, stream);
}

}  // namespace kvs::cuda
