// Prefill and chunked-prefill attention on Hopper's warpgroup MMAs (wgmma, sm_90a), for every KV
// format (bf16, fp16, fp8, int8, int4) with head_dim 64 or 128. Built for sm_90a alone (kernels/CMakeLists.txt);
// LaunchAttentionFor (paged_attention_kernels.cuh) picks it on compute capability 9.0 devices and
// keeps the mma.sync kernel everywhere else. Same contract as PagedPrefillMmaKernel, per work item
// instead of per block: an item is query rows of one (sequence, KV head) — row r is query token
// r / group, head r % group, so the GQA group shares every K/V tile — over the key range of its
// split, and a block runs items one after another (WorkItems, ForEachItem).
//
// A block is a producer warpgroup and two consumer warpgroups of 64 query rows each (128 rows). K/V
// tiles of 128 keys are loaded from the pages into a ring of shared-memory stages laid out as wgmma
// reads them: 128-byte rows of 64 elements, 16-byte chunks XOR-swizzled by row (the hardware's 128B
// swizzle), a head_dim of 128 as two 64-wide sub-tiles. Where pages hold a multiple of 16 keys, the
// tensor memory accelerator copies each 16-key piece of a page (kv_tensor_map.h; 1.06-1.08x the
// kernel's rate on an H100); elsewhere, and for a tile that reaches past its range's end, the
// producer threads copy 16-byte pieces by cp.async, each key located through the block table.
// Per tile each warpgroup computes S = Q K^T (SS wgmma, Q and K K-major), the online
// softmax on the accumulator fragments (the scale folded into the exponent, causal mask only on
// tiles that reach a row's position), and O += P V (RS wgmma: P re-packed from S's registers as the A
// fragment, V read N-major). The next tile's loads are in flight during both; the two
// warpgroups' GEMMs and softmaxes interleave on the SM freely at head_dim 128, and in strict
// turns (FlashAttention-3's ping-pong) at 64, where that measured faster (PingPong).
//
// Quantized caches (fp8, int8, int4) are decoded by the producer warps: they stage the codes and
// scales by cp.async into the stage itself and rewrite them there as fp16 values in the same
// swizzled layout (StageCodesTile / ConvertStagedTile), and the consumers run the fp16 kernel
// unchanged. fp8 wgmma was not used: its B operand must be K-major, so V
// would need a transpose in shared memory, and Q and P would be rounded to e4m3.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/kernel_choice.h"
#include "kernels/cuda/kv_tensor_map.h"
#include "kernels/cuda/paged_prefill_wgmma.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/prefill_decoded_first.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace kvs::cuda::attention {
namespace {

constexpr int kWgmmaThreads = 384;  // a producer warpgroup and two consumer warpgroups
constexpr int kWgmmaRows = 128;     // query rows per block, 64 per consumer warpgroup
constexpr int kQSubTileBytes = 128 * 128;  // 128 query rows x 64 elements x 2 bytes
// Registers a thread: each of the 384 starts with 168 (65,536 / 384, in steps of 8); the producer
// warpgroup gives some back (setmaxnreg.dec) and the consumers take them (setmaxnreg.inc), from
// the block's own pool: if the consumers ask for more than the producer freed, their
// setmaxnreg.inc never returns (a hang, not an error). 224 holds the consumers' S, O and two P
// fragments without spilling (ptxas -v). The producer keeps 56 where it converts (Q to fp16, or
// the quantized caches' codes): at 48 those kernels spilled 16-104 bytes (ptxas -v, CUDA 13), at
// 56 none but int4's (44-56); the bf16 kernels keep the 48 they were measured with (no spills
// at head_dim 128; 40 bytes at 64).
constexpr int kLaunchRegs = 168, kConsumerRegs = 224;
__host__ __device__ constexpr int ProducerRegs(bool converts) { return converts ? 56 : 48; }
static_assert(128 * ProducerRegs(true) + 256 * kConsumerRegs <= kWgmmaThreads * kLaunchRegs &&
                  128 * ProducerRegs(false) + 256 * kConsumerRegs <= kWgmmaThreads * kLaunchRegs,
              "the consumers' registers must come from what the producer gives back");

// Shared memory: Q [D/64][128 rows][64], the stages' K and V, each [D/64][keys][64], then the
// stages' full/empty barriers and Q's; + 1024 for alignment. As many stages as 227 KiB holds beside Q.
template <int D, int kKeys>
struct WgmmaLayout {
  static constexpr int kQBytes = (D / 64) * kQSubTileBytes;
  static constexpr int kTileBytes = (D / 64) * kKeys * 128;  // one stage's K (or V)
  static constexpr int kStages = (227 * 1024 - 2048 - kQBytes) / (2 * kTileBytes);
  static constexpr int kBarrierOffset = kQBytes + 2 * kStages * kTileBytes;
  static constexpr size_t kSmem = static_cast<size_t>(kBarrierOffset) + 2 * 8 * (kStages + 1) + 1024;
  static_assert(kSmem <= 227 * 1024, "over the shared memory of one block");
};

// Byte offset of 16-byte chunk `chunk` (of D / 8) of row `row` in a [D/64][rows][64] tile whose
// 64-wide sub-tiles are `sub_bytes` apart.
__device__ inline uint32_t TileOffset(int row, int chunk, uint32_t sub_bytes) {
  return (chunk >> 3) * sub_bytes + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// A shared-memory matrix descriptor with the 128-byte swizzle (PTX ISA "Matrix Descriptor
// Format"): start address, leading- and stride-dimension byte offsets, each in 16-byte units.
__device__ inline uint64_t Descriptor(uint32_t addr, uint32_t leading_bytes, uint32_t stride_bytes) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((leading_bytes & 0x3FFFF) >> 4) << 16) |
         (static_cast<uint64_t>((stride_bytes & 0x3FFFF) >> 4) << 32) | (uint64_t{1} << 62);
}

__device__ inline void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// mbarriers in shared memory (PTX ISA "Parallel Synchronization and Communication Instructions").
__device__ inline void BarrierInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ inline void BarrierArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Arrives once this thread's earlier cp.async copies have landed (counted in the init count).
__device__ inline void BarrierArriveOnCopies(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Arrives and adds `bytes` to the transfers the barrier's phase waits for (the tensor copies that
// complete on it).
__device__ inline void BarrierArriveExpectBytes(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// One box of a 4-D tensor map (kv_tensor_map.h) into shared memory at dst, completing on `bar`.
__device__ inline void TensorCopy4d(uint32_t dst, const CUtensorMap& map, int c0, int c1, int c2, int c3,
                                    uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
// Waits until the barrier's phase of parity `parity` has completed.
__device__ inline void BarrierWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Ping-pong turns between the two consumer warpgroups (named barriers 3, 4: one per warpgroup's
// turn; 0 is __syncthreads).
__device__ inline void TurnWait(int wg) { asm volatile("bar.sync %0, 256;\n" ::"r"(3 + wg) : "memory"); }
__device__ inline void TurnPass(int to_wg) { asm volatile("bar.arrive %0, 256;\n" ::"r"(3 + to_wg) : "memory"); }

__device__ inline void StoreShared16(uint32_t addr, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}
__device__ inline uint4 LoadShared16(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
// The f32 dot product of 8 bf16 values and 8 bf16 (kHalf: fp16) values, 16 bytes each.
template <bool kHalf>
__device__ inline float Dot8(uint4 a, uint4 b) {
  const uint32_t x[4] = {a.x, a.y, a.z, a.w}, y[4] = {b.x, b.y, b.z, b.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x[i]));
    float2 fb;
    if constexpr (kHalf) {
      fb = __half22float2(*reinterpret_cast<const __half2*>(&y[i]));
    } else {
      fb = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&y[i]));
    }
    s = fmaf(fa.x, fb.x, fmaf(fa.y, fb.y, s));
  }
  return s;
}

// A quantized tile's producer work: this warp's 32 keys of [base, base + kKeys), K and V, decoded
// to fp16 values (codes x scale for fp8/int8, as the mma.sync kernel's V; code x scale + zero
// per group of 32 for int4) in the swizzled stage. Consecutive lanes load consecutive 16-byte
// pieces of a row (whole 32-byte sectors, as the bf16 path copies); `mine` is the row of key
// base + lane (one block-table read per key), passed by shuffle. Keys at or past k_hi are zeros,
// never read (the cache's unused slots may hold anything). Kept for comparison
// (KVS_WGMMA_CODES=registers): staging in place, below, measured 1.3x faster for fp8/int8 (H100).
template <KvDType F, int D, int kKeys>
__device__ inline void DecodeCodesTile(const Params& p, KvRow mine, int base, int k_hi, int warp_key0, int lane,
                                       uint32_t k_dst, uint32_t v_dst) {
  constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
  constexpr int kPieces = kRowBytes / 16;                       // 16-byte loads per row
  constexpr int kKeysPerLoad = 32 / kPieces;                    // rows one warp instruction covers
  constexpr int kChunksPerPiece = F == KvDType::kINT4 ? 4 : 2;  // 8-element chunks a piece decodes to
  constexpr uint32_t kSubTileBytes = kKeys * 128;
  const int piece = lane % kPieces;
#pragma unroll 1
  for (int r = 0; r < kPieces; ++r) {
    const int src = r * kKeysPerLoad + lane / kPieces, key = warp_key0 + src;
    const int64_t codes = __shfl_sync(0xffffffffu, mine.codes, src);
    const int64_t scales = __shfl_sync(0xffffffffu, mine.scales, src);
    const bool valid = base + key < k_hi;
    uint4 kc = make_uint4(0, 0, 0, 0), vc = kc;
    uint32_t ks = 0, vs = 0;  // fp8/int8: the f32 scale's bits; int4: this piece's (scale, zero) half2
    if (valid) {
      kc = __ldg(reinterpret_cast<const uint4*>(p.k_cache + codes + piece * 16));
      vc = __ldg(reinterpret_cast<const uint4*>(p.v_cache + codes + piece * 16));
      const int64_t s_off = scales + (F == KvDType::kINT4 ? piece * 4 : 0);  // int4: one group of 32 per piece
      ks = __ldg(reinterpret_cast<const uint32_t*>(p.k_cache + s_off));
      vs = __ldg(reinterpret_cast<const uint32_t*>(p.v_cache + s_off));
    }
    // One piece -> kChunksPerPiece chunks of 8 values (int4: a word of nibbles each; fp8/int8:
    // two words each), stored swizzled.
    auto emit = [&](const uint4& c, uint32_t sc, uint32_t dst) {
      const uint32_t w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
      for (int i = 0; i < kChunksPerPiece; ++i) {
        uint32_t h[4];
        CodesToHalf8<F, false>(w + i * (4 / kChunksPerPiece), sc, h);
        StoreShared16(dst + TileOffset(key, piece * kChunksPerPiece + i, kSubTileBytes), h[0], h[1], h[2], h[3]);
      }
    };
    emit(kc, ks, k_dst);
    emit(vc, vs, v_dst);
  }
}

// The same tile's work in two halves, with no registers held while the loads fly (what bounds
// DecodeCodesTile: 40 registers keep one 16-byte piece of K and of V in flight, eight dependent
// round trips a tile). StageCodesTile queues this warp's 32 keys' codes and scales by cp.async
// into the stage itself, each key's bytes inside the stage rows that its fp16 values will
// occupy (CodesAt, ScalesAt); ConvertStagedTile later rewrites each row in place. A key's raw bytes lie in
// its own rows (row k of each 64-wide sub-tile), and one warp reads all of a key's raw bytes
// before any lane writes that key's values, so converting needs only __syncwarp, no extra
// shared memory and no stage given up. Keys at or past k_hi are zero-filled by the copies and
// convert to zeros.
template <KvDType F, int D, int kKeys>
struct StagedCodes {
  static constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
  static constexpr int kScaleBytes = static_cast<int>(KvScaleBytes(F, D));  // 4, or 4 per group of 32
  static constexpr int kPieces = kRowBytes / 16;
  static constexpr int kKeysPerPass = 32 / kPieces;
  static constexpr int kChunksPerPiece = F == KvDType::kINT4 ? 4 : 2;
  static constexpr uint32_t kSubTileBytes = kKeys * 128;
  static_assert(kRowBytes <= 128 && kScaleBytes <= 16, "a key's codes fit its first sub-tile row");
  // Codes at the start of sub-tile 0's row `key`; scales after them when they fit that row
  // (int4, and fp8/int8 at head_dim 64), else at the start of sub-tile 1's row (fp8/int8, 128).
  __device__ static uint32_t CodesAt(uint32_t stage, int key) { return stage + key * 128; }
  __device__ static uint32_t ScalesAt(uint32_t stage, int key) {
    return kRowBytes + kScaleBytes <= 128 ? stage + key * 128 + kRowBytes : stage + kSubTileBytes + key * 128;
  }
};

template <KvDType F, int D, int kKeys>
__device__ inline void StageCodesTile(const Params& p, KvRow mine, int base, int k_hi, int warp_key0, int lane,
                                      uint32_t k_dst, uint32_t v_dst) {
  using S = StagedCodes<F, D, kKeys>;
  const int piece = lane % S::kPieces;
#pragma unroll 1
  for (int r = 0; r < S::kPieces; ++r) {  // consecutive lanes on consecutive pieces of a row
    const int src = r * S::kKeysPerPass + lane / S::kPieces, key = warp_key0 + src;
    const int64_t codes = __shfl_sync(0xffffffffu, mine.codes, src);
    const int n = base + key < k_hi ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(S::CodesAt(k_dst, key) + piece * 16),
                 "l"(p.k_cache + codes + piece * 16), "r"(n));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(S::CodesAt(v_dst, key) + piece * 16),
                 "l"(p.v_cache + codes + piece * 16), "r"(n));
  }
  const int key = warp_key0 + lane;  // each lane its own key's scales
  const int n = base + key < k_hi ? S::kScaleBytes : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(S::ScalesAt(k_dst, key)),
               "l"(p.k_cache + mine.scales), "n"(S::kScaleBytes), "r"(n));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(S::ScalesAt(v_dst, key)),
               "l"(p.v_cache + mine.scales), "n"(S::kScaleBytes), "r"(n));
}

// Call after the warp's copies of this stage have landed (cp.async.wait_group by every lane).
template <KvDType F, int D, int kKeys>
__device__ inline void ConvertStagedTile(int warp_key0, int lane, uint32_t k_stage, uint32_t v_stage) {
  using S = StagedCodes<F, D, kKeys>;
  const int piece = lane % S::kPieces;
  __syncwarp();  // every lane's landed copies, visible to the others
#pragma unroll 1
  for (int r = 0; r < S::kPieces; ++r) {
    const int key = warp_key0 + r * S::kKeysPerPass + lane / S::kPieces;
    const uint4 kc = LoadShared16(S::CodesAt(k_stage, key) + piece * 16);
    const uint4 vc = LoadShared16(S::CodesAt(v_stage, key) + piece * 16);
    uint32_t ks, vs;
    const int s_off = F == KvDType::kINT4 ? piece * 4 : 0;  // int4: one group of 32 per piece
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(ks) : "r"(S::ScalesAt(k_stage, key) + s_off));
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(vs) : "r"(S::ScalesAt(v_stage, key) + s_off));
    __syncwarp();  // this pass's keys read whole before any lane overwrites them
    auto emit = [&](const uint4& c, uint32_t sc, uint32_t dst) {
      const uint32_t w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
      for (int i = 0; i < S::kChunksPerPiece; ++i) {
        uint32_t h[4];
        CodesToHalf8<F, false>(w + i * (4 / S::kChunksPerPiece), sc, h);
        StoreShared16(dst + TileOffset(key, piece * S::kChunksPerPiece + i, S::kSubTileBytes), h[0], h[1], h[2], h[3]);
      }
    };
    emit(kc, ks, k_stage);
    emit(vc, vs, v_stage);
  }
}

// P = exp2(s * scale - ms) in place for rows g (entries 0, 1) and g + 8 (2, 3), and this thread's
// share of each row's sum.
template <int NT>
__device__ inline void TileExponentials(float (&sc)[NT][4], float scale, float ms_lo, float ms_hi, float& sum_lo,
                                        float& sum_hi) {
  sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      sc[nt][j] = FastExp2(fmaf(sc[nt][j], scale, -ms_lo));
      sc[nt][2 + j] = FastExp2(fmaf(sc[nt][2 + j], scale, -ms_hi));
      sum_lo += sc[nt][j];
      sum_hi += sc[nt][2 + j];
    }
  }
}

// FragmentSoftmax (paged_attention_common.cuh) with two of its steps moved, as FlashAttention-3
// does (~65 fewer instructions a tile and thread in the bf16 kernel's SASS; 1.04-1.05x the
// kernel's rate on an H100, docs/performance.md): S stays unscaled (the running max m too, in
// S's units) and the scale (positive) is folded into the exponent's multiply-add,
// exp2(s * scale - m * scale), where S was first multiplied element by element (64 multiplies a
// tile and thread fewer); and l is this thread's share of its row's sum, the quad's shares added
// once at the end (ReduceRowSums) instead of by shuffles every tile (the rescale c is the same
// for the quad's four threads, so the shares can be kept apart). Masked scores are -FLT_MAX, as
// FragmentSoftmax's.
//
// And the running max moves only when a tile's maximum passes it by more than kMaxLag in log2
// units (FlashAttention-4's conditional rescale): until then each exp2(s * scale - m * scale) is
// at most 2^kMaxLag (exact enough as fp16/bf16 P and in f32 sums), c stays 1 and the consumers skip
// rescaling O (64 multiplies a tile and thread at head_dim 128). Any m works for the online
// softmax as long as l and O are kept against the same one; it only has to keep the exponentials
// from overflowing, and 2^8 is far from fp16's 65,504.
inline constexpr float kMaxLag = 8.0f;
template <int NT>
__device__ inline void ScaledFragmentSoftmax(float (&sc)[NT][4], float scale, float max_lag, float& m_lo, float& l_lo,
                                             float& m_hi, float& l_hi, float& c_lo, float& c_hi) {
  float mx_lo, mx_hi;
  FragmentRowMax<NT>(sc, mx_lo, mx_hi);
  // The first unmasked key always moves m (from -FLT_MAX: (mx - m) * scale overflows to +inf).
  const bool move_lo = (fmaxf(m_lo, mx_lo) - m_lo) * scale > max_lag;
  const bool move_hi = (fmaxf(m_hi, mx_hi) - m_hi) * scale > max_lag;
  const float mn_lo = move_lo ? mx_lo : m_lo, mn_hi = move_hi ? mx_hi : m_hi;
  // A row with no unmasked key yet subtracts 0 (its masked scores still give exp2(~-4e37) = 0).
  const float ms_lo = mn_lo == -FLT_MAX ? 0.0f : mn_lo * scale, ms_hi = mn_hi == -FLT_MAX ? 0.0f : mn_hi * scale;
  c_lo = move_lo ? FastExp2(fmaf(m_lo, scale, -ms_lo)) : 1.0f;  // 0 when the row had no keys (m = -FLT_MAX)
  c_hi = move_hi ? FastExp2(fmaf(m_hi, scale, -ms_hi)) : 1.0f;
  float sum_lo, sum_hi;
  TileExponentials<NT>(sc, scale, ms_lo, ms_hi, sum_lo, sum_hi);
  l_lo = l_lo * c_lo + sum_lo;
  l_hi = l_hi * c_hi + sum_hi;
  m_lo = mn_lo;
  m_hi = mn_hi;
}
// The same update without the row max on tiles after a row's first (the lagging kernel,
// HopperPrefillSoftmax::kLagging; the max above is 62 FMNMX and 4 shuffles a tile and thread at
// 128 keys, the largest part of the softmax beside the exponentials): the exponentials are taken against the lagging
// max as they are, and a warp all of whose threads' shares of their rows' sums stay at most
// 2^kMaxLag — so every exponential does — is done, as ScaledFragmentSoftmax would have been
// (which would not have moved the max either). A warp where a share passes it (rarely past a
// row's first tiles) takes each row's largest exponential px and, where px > 1, moves the row's
// max up by log2(px) and scales the row's P, sum and O by 1/px: the same online softmax against
// another consistent max. Only where an exponential overflowed (a score 2^128 past the lagging
// max: P is lost) does it return true, l and m untouched, for the caller to recompute S and
// raise the max (RaiseRowMax) before calling again. Every row's max must already be set where
// `sc` has keys the row sees (a row with keys has one in its item's first tile: RaiseRowMax).
template <int NT>
__device__ inline bool LaggingFragmentSoftmax(float (&sc)[NT][4], float scale, float inv_scale, float& m_lo,
                                              float& l_lo, float& m_hi, float& l_hi, float& c_lo, float& c_hi) {
  const float ms_lo = m_lo == -FLT_MAX ? 0.0f : m_lo * scale, ms_hi = m_hi == -FLT_MAX ? 0.0f : m_hi * scale;
  float sum_lo, sum_hi;
  TileExponentials<NT>(sc, scale, ms_lo, ms_hi, sum_lo, sum_hi);
  c_lo = 1.0f, c_hi = 1.0f;
  constexpr float kBound = 1 << static_cast<int>(kMaxLag);
  if (__any_sync(0xffffffffu, !(sum_lo <= kBound && sum_hi <= kBound))) {  // NaN and inf fail too
    float px_lo, px_hi;
    FragmentRowMax<NT>(sc, px_lo, px_hi);
    if (__any_sync(0xffffffffu, !(px_lo <= FLT_MAX && px_hi <= FLT_MAX))) return true;
    if (px_lo > 1.0f) {
      const float d = FastLog2(px_lo);
      c_lo = FastExp2(-d);
      m_lo += d * inv_scale;
    }
    if (px_hi > 1.0f) {
      const float d = FastLog2(px_hi);
      c_hi = FastExp2(-d);
      m_hi += d * inv_scale;
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        sc[nt][j] *= c_lo;
        sc[nt][2 + j] *= c_hi;
      }
    }
    sum_lo *= c_lo;
    sum_hi *= c_hi;
  }
  l_lo = l_lo * c_lo + sum_lo;
  l_hi = l_hi * c_hi + sum_hi;
  return false;
}
// Each row's max raised to its largest score in `sc` (masked), l scaled and O's rescale returned
// in c to match (1 where it stays; 0 for a row's first keys): the lagging kernel's first tile of
// an item, and a tile whose exponentials overflowed once S is recomputed.
template <int NT>
__device__ inline void RaiseRowMax(const float (&sc)[NT][4], float scale, float& m_lo, float& l_lo, float& m_hi,
                                   float& l_hi, float& c_lo, float& c_hi) {
  float mx_lo, mx_hi;
  FragmentRowMax<NT>(sc, mx_lo, mx_hi);
  c_lo = 1.0f, c_hi = 1.0f;
  if (mx_lo > m_lo) {
    c_lo = FastExp2(fmaf(m_lo, scale, -mx_lo * scale));  // 0 from m = -FLT_MAX
    l_lo *= c_lo;
    m_lo = mx_lo;
  }
  if (mx_hi > m_hi) {
    c_hi = FastExp2(fmaf(m_hi, scale, -mx_hi * scale));
    l_hi *= c_hi;
    m_hi = mx_hi;
  }
}
// The rows' sums from the quad's shares (every lane of the warp calls it).
__device__ inline void ReduceRowSums(float& l_lo, float& l_hi) {
  for (int off = 1; off < 4; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
}

// The kernel's work items: query rows [r0, r0 + rows_here) of one (sequence, KV head) over the
// keys of one split, numbered longest first (the last row chunks of a causal prompt see the
// most keys), KV head fastest: item i of the planned grid (x, kv_heads, sequences) is its linear
// block index.
struct WorkItems {
  int32_t x;      // the planned grid's x: splits x row chunks
  int32_t total;  // items in all
};
struct WorkItem {
  int kvh, seq, split, q_begin, first_pos, r0, rows_here, k_lo, k_hi, num_tiles;
};
template <int kKeys>
__device__ inline WorkItem DescribeItem(const Params& p, const WorkItems& work, int item) {
  WorkItem w;
  w.kvh = item % p.kv_heads;
  const int xi = (item / p.kv_heads) % work.x;
  w.seq = item / p.kv_heads / work.x;
  w.split = xi / p.row_chunks;
  const int chunk = p.row_chunks - 1 - xi % p.row_chunks;
  w.q_begin = p.query_start[w.seq];
  const int n_q = p.query_start[w.seq + 1] - w.q_begin;
  const int ctx = p.context_len[w.seq];
  w.first_pos = ctx - n_q;
  const int group = p.q_heads / p.kv_heads;
  w.r0 = chunk * kWgmmaRows;
  w.rows_here = max(0, min(kWgmmaRows, n_q * group - w.r0));
  w.k_lo = w.split * p.keys_per_split;
  const int block_last_pos = w.first_pos + (w.r0 + w.rows_here - 1) / group;
  w.k_hi = min(min(ctx, w.k_lo + p.keys_per_split), block_last_pos + 1);
  w.num_tiles = w.rows_here > 0 && w.k_lo < w.k_hi ? (w.k_hi - w.k_lo + kKeys - 1) / kKeys : 0;
  return w;
}
// Calls body(item) for this block's items with rows: the block takes item blockIdx.x of every
// wave of gridDim.x items, in a snake (odd waves reversed) so that over the waves each block
// gets long and short items alike. One block per item is the grid of one wave.
template <int kKeys, typename Body>
__device__ inline void ForEachItem(const Params& p, const WorkItems& work, Body&& body) {
  for (int first = 0, wave = 0; first < work.total; first += gridDim.x, ++wave) {
    const int item = first + ((wave & 1) ? gridDim.x - 1 - blockIdx.x : blockIdx.x);
    if (item >= work.total) continue;
    const WorkItem w = DescribeItem<kKeys>(p, work, item);
    if (w.rows_here > 0) body(w);
  }
}

// Warp specialised: warpgroup 0 gathers each item's Q and its K/V tiles from the pages with
// cp.async into shared memory, K/V into a ring of stages (each stage's `full` barrier completes
// when its copies land, its `empty` barrier when both consumers are done with it); warpgroups 1
// and 2 each own 64 query rows and run through the tiles at their own pace, so one's softmax
// overlaps the other's MMAs. Blocks stay resident over several items (grid = the blocks the GPU
// holds at once): the ring runs on across items, and the next item's Q is loaded as soon as
// both consumers' last S = Q K^T of the current one is done (`q_empty`, then `q_full`), so the
// next item's first tiles and Q land while the consumers finish this item's last tiles and
// write its output, where a block per item paid its start (Q, the first tile, the pipeline's
// fill) and its end (the stores, the block's exit) with the SM's tensor cores idle.
// Bits of the kernel's `flags`.
constexpr int kFlagPingPong = 1;      // consumer warpgroups take turns issuing GEMMs
constexpr int kFlagStagedCodes = 2;   // quantized tiles staged in place (StageCodesTile), not in registers
constexpr int kFlagTensorCopies = 4;  // whole tiles by tensor copies (`maps`), others by cp.async
constexpr int kFlagEagerRescale = 8;  // O rescaled every tile (KVS_WGMMA_RESCALE=eager), not past kMaxLag only

// kSoftmax (HopperPrefillSoftmax): the row max on every tile (kEveryTile: ScaledFragmentSoftmax),
// or on a row's first tile only (kLagging: LaggingFragmentSoftmax). ptxas places the wait for
// P_j V_j above the straight-line softmax of kEveryTile, not into the lagging one's retry loop, so
// only the lagging softmax overlaps that MMA (the SASS has no exponential between the two waits
// otherwise). Keeping kEveryTile's softmax before the wait too (a loop region run once) measured
// 0.94-0.96x at head_dim 128 and 0.99x at 64 (docs/performance.md, the twenty-ninth session).
template <KvDType F, int D, int kKeys, int kSoftmax>
__global__ void __launch_bounds__(kWgmmaThreads, 1)
    PagedPrefillWgmmaKernel(Params p, WorkItems work, int flags, const __grid_constant__ KvTensorMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kHalf = F != KvDType::kBF16;  // fp16 MMAs for every format but bf16
  constexpr bool kCodes = F == KvDType::kFP8 || F == KvDType::kINT8 || F == KvDType::kINT4;
  constexpr int kChunks = D / 8;   // 16-byte chunks per row
  constexpr int kKSteps = D / 16;  // k-steps of S = Q K^T
  constexpr int kDBlocks = D / 8;  // n-blocks of O
  using Layout = WgmmaLayout<D, kKeys>;
  constexpr int kSubTileBytes = kKeys * 128;  // one 64-wide sub-tile of K or V
  constexpr int kTileBytes = Layout::kTileBytes;
  constexpr int kQBytes = Layout::kQBytes;
  constexpr int kStages = Layout::kStages;
  constexpr int kNB = kKeys / 8;    // n-blocks of S
  constexpr int kPSteps = kKeys / 16;  // k-steps of O += P V
  extern __shared__ unsigned char smem_raw[];
  // 1024-byte alignment: the swizzle pattern repeats every 8 rows of 128 bytes.
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t q_s = smem_base;
  auto k_s = [&](int stage) { return smem_base + kQBytes + kTileBytes * (2 * stage); };
  auto v_s = [&](int stage) { return smem_base + kQBytes + kTileBytes * (2 * stage + 1); };
  const uint32_t bars = smem_base + Layout::kBarrierOffset;
  auto full = [&](int stage) { return bars + 8 * stage; };
  auto empty = [&](int stage) { return bars + 8 * (kStages + stage); };
  const uint32_t q_full = bars + 8 * (2 * kStages), q_empty = q_full + 8;

  const int tid = threadIdx.x, wg = tid / 128;
  const int group = p.q_heads / p.kv_heads;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      BarrierInit(full(s), 128);  // every producer thread's copies
      BarrierInit(empty(s), 256);  // every consumer thread
    }
    BarrierInit(q_full, 128);   // every producer thread's copies of an item's Q
    BarrierInit(q_empty, 256);  // every consumer thread, once its last S of an item is done
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  // Launched with programmatic dependent launch: the set-up above overlaps the previous kernel's
  // end; nothing an earlier kernel writes is read before this wait.
  pdl::StartAfterPrevious();

  if (wg == 0) {
    // Producer: each thread locates one key (one block-table read per tile), and the warp then
    // copies its 32 keys' rows with consecutive lanes on consecutive chunks of a row (row
    // offsets passed by shuffle), so that every copy instruction reads whole 32-byte sectors:
    // one key per lane read each sector twice and held L2 at 97.6% of its throughput (Nsight
    // Compute), and a block-table read per key and lane made the producer latency-bound. Keys
    // at or past k_hi are zero-filled, never read from the cache (its unused slots may hold
    // anything). `ring` counts the tiles of this block's earlier items: tile j of an item is
    // ring slot ring + j.
    const int lane = tid % 32, warp_key0 = tid - lane;
    int ring = 0, n_item = 0;
    // The item's 128 query rows (rows past rows_here zero-filled), once the consumers are done
    // with the last item's: raw bf16 for the bf16 kernel; for the fp16 one (an fp16 cache, or a
    // quantized one decoded to fp16) each thread converts the chunks it copied in place once they
    // land, here where it overlaps the consumers' last tiles of the previous item rather than
    // holding both consumer warpgroups (and the tensor cores) at the start of every item.
    auto load_q = [&](const WorkItem& w) {
      if (n_item > 0) BarrierWait(q_empty, (n_item - 1) & 1);
      // Thread tid copies chunk tid % kChunks of rows tid / kChunks + k * kRowStep: a multiple
      // of 8 rows apart, so one swizzle, and the shared address steps by kRowStep rows.
      constexpr int kRowStep = 128 / kChunks;
      static_assert(kRowStep % 8 == 0, "Q rows a thread copies share their swizzle");
      const int c = tid % kChunks;
      const uint32_t dst0 = q_s + TileOffset(tid / kChunks, c, kQSubTileBytes);
#pragma unroll 1
      for (int row = tid / kChunks; row < kWgmmaRows; row += kRowStep) {
        const int rr = w.r0 + row;
        const bool valid = row < w.rows_here;
        const bf16* src = valid ? p.q + static_cast<int64_t>(w.q_begin + rr / group) * p.q_stride +
                                      (w.kvh * group + rr % group) * D + c * 8
                                : p.q;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst0 + (row - tid / kChunks) * 128),
                     "l"(src), "r"(valid ? 16 : 0));
      }
      if constexpr (kHalf) {
        asm volatile("cp.async.wait_all;\n" ::: "memory");  // this thread's copies (and any earlier)
#pragma unroll 1
        for (int row = tid / kChunks; row < kWgmmaRows; row += kRowStep) {
          const uint32_t addr = dst0 + (row - tid / kChunks) * 128;
          const uint4 q = LoadShared16(addr);
          uint32_t v[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v[j]));
            v[j] = PackHalf(f.x, f.y);
          }
          StoreShared16(addr, v[0], v[1], v[2], v[3]);
        }
        FenceProxyAsync();  // these generic-proxy stores, before the consumers' wgmma reads them
        BarrierArrive(q_full);
      } else {
        BarrierArriveOnCopies(q_full);
      }
      ++n_item;
    };
    // Runs tile(item, its block table, stage, first key) for every tile of this block's items in
    // turn, each once its stage is free, after queueing the item's Q.
    auto each_tile = [&](auto&& tile) {
      ForEachItem<kKeys>(p, work, [&](const WorkItem& w) {
        load_q(w);
        const int32_t* blocks = p.block_table + static_cast<int64_t>(w.seq) * p.max_blocks_per_seq;
        for (int j = 0; j < w.num_tiles; ++j) {
          const int slot = ring + j, stage = slot % kStages, base = w.k_lo + j * kKeys;
          if (slot >= kStages) BarrierWait(empty(stage), ((slot / kStages) & 1) ^ 1);
          tile(w, blocks, stage, base);
        }
        ring += w.num_tiles;
      });
    };
    if constexpr (kCodes) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(ProducerRegs(kHalf)));
      if (flags & kFlagStagedCodes) {
        ForEachItem<kKeys>(p, work, [&](const WorkItem& w) {
          load_q(w);
          const int32_t* blocks = p.block_table + static_cast<int64_t>(w.seq) * p.max_blocks_per_seq;
          // Tile j's copies are queued before tile j - 1 converts, so they fly during that
          // conversion and during the wait for tile j + 1's stage.
          auto convert = [&](int slot) {
            if (warp_key0 < kKeys)
              ConvertStagedTile<F, D, kKeys>(warp_key0, lane, k_s(slot % kStages), v_s(slot % kStages));
            FenceProxyAsync();  // these generic-proxy stores, before the consumers' wgmma reads them
            BarrierArrive(full(slot % kStages));
          };
          // Each thread's key's block-table entry is read one tile ahead (`next`), so that the
          // read's latency passes while the previous tile converts instead of before this tile's
          // copies are queued: Nsight Compute put fp8's producer mostly in long-scoreboard stalls
          // (3.75 of 8.95 cycles per instruction over all warps, bf16's 0.60 of 6.23; H100, 16K).
          auto entry = [&](int pos) { return tid < kKeys && pos < w.k_hi ? __ldg(blocks + pos / p.block_size) : 0; };
          int32_t next = entry(w.k_lo + tid);
          for (int j = 0; j < w.num_tiles; ++j) {
            const int slot = ring + j, stage = slot % kStages, base = w.k_lo + j * kKeys;
            const int32_t block = next;
            next = entry(base + kKeys + tid);
            if (slot >= kStages) BarrierWait(empty(stage), ((slot / kStages) & 1) ^ 1);
            if (warp_key0 < kKeys) {
              const KvRow mine = tid < kKeys && base + tid < w.k_hi ? LocateKvIn(p, block, base + tid, w.kvh) : KvRow{};
              StageCodesTile<F, D, kKeys>(p, mine, base, w.k_hi, warp_key0, lane, k_s(stage), v_s(stage));
            }
            asm volatile("cp.async.commit_group;\n" ::: "memory");
            if (j > 0) {
              asm volatile("cp.async.wait_group 1;\n" ::: "memory");
              convert(slot - 1);
            }
          }
          asm volatile("cp.async.wait_group 0;\n" ::: "memory");
          if (w.num_tiles > 0) convert(ring + w.num_tiles - 1);
          ring += w.num_tiles;
        });
        return;
      }
      each_tile([&](const WorkItem& w, const int32_t* blocks, int stage, int base) {
        if (warp_key0 < kKeys) {
          const KvRow mine = tid < kKeys && base + tid < w.k_hi ? LocateKv(p, blocks, base + tid, w.kvh) : KvRow{};
          DecodeCodesTile<F, D, kKeys>(p, mine, base, w.k_hi, warp_key0, lane, k_s(stage), v_s(stage));
        }
        FenceProxyAsync();  // these generic-proxy stores, before the consumers' wgmma reads them
        BarrierArrive(full(stage));
      });
      asm volatile("cp.async.wait_all;\n" ::: "memory");
      return;
    }
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(ProducerRegs(kHalf)));
    constexpr int kKeysPerCopy = 32 / kChunks;  // rows one warp instruction covers
    const int c = lane % kChunks;
    each_tile([&](const WorkItem& w, const int32_t* blocks, int stage, int base) {
      // A tile inside the range, by tensor copies (kFlagTensorCopies: pages of a multiple of 16
      // keys, the range starting at a multiple of 16): lane i of the first warp reads the page of
      // keys [base + 16 i, + 16) and copies their K and V rows, a 64-element box at a time,
      // straight into the swizzled sub-tiles (the box's 16 rows of 128 bytes start at a multiple
      // of 1024 bytes, where the hardware's swizzle and TileOffset agree). The first lane's
      // arrival tells the barrier the tile's bytes before any copy is issued; every other producer
      // thread arrives as for copies. A tile that reaches past k_hi takes the copies below,
      // which zero-fill its keys past the range (a page's unused slots may hold anything).
      if ((flags & kFlagTensorCopies) && base + kKeys <= w.k_hi) {
        constexpr int kBoxes = kKeys / kKvTensorBoxKeys;
        if (warp_key0 == 0) {
          const int key = base + lane * kKvTensorBoxKeys;
          const int32_t page = lane < kBoxes ? __ldg(blocks + BlockIndex(p, key)) : 0;
          if (lane == 0) BarrierArriveExpectBytes(full(stage), 2 * kTileBytes);
          __syncwarp();
          if (lane < kBoxes) {
            const int slot = p.block_shift >= 0 ? key & (p.block_size - 1) : key % p.block_size;
#pragma unroll
            for (int h = 0; h < D / kKvTensorBoxElems; ++h) {
              const uint32_t off = h * kSubTileBytes + lane * kKvTensorBoxKeys * 128;
              TensorCopy4d(k_s(stage) + off, maps.k, h * kKvTensorBoxElems, w.kvh, slot, page, full(stage));
              TensorCopy4d(v_s(stage) + off, maps.v, h * kKvTensorBoxElems, w.kvh, slot, page, full(stage));
            }
          }
          if (lane != 0) BarrierArrive(full(stage));
        } else {
          BarrierArrive(full(stage));
        }
        return;
      }
      if (warp_key0 < kKeys) {  // warp-uniform: a 96-key tile leaves the last warp idle
        const bool mine_valid = tid < kKeys && base + tid < w.k_hi;
        const int64_t mine = mine_valid ? LocateKv(p, blocks, base + tid, w.kvh).codes : 0;
#pragma unroll 2
        for (int r = 0; r < kChunks; ++r) {
          const int src = r * kKeysPerCopy + lane / kChunks, key = warp_key0 + src;
          const int64_t codes = __shfl_sync(0xffffffffu, mine, src);
          const bool valid = key < kKeys && base + key < w.k_hi;
          const uint32_t off = TileOffset(key, c, kSubTileBytes);
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(k_s(stage) + off),
                       "l"(p.k_cache + codes + c * 16), "r"(valid ? 16 : 0));
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(v_s(stage) + off),
                       "l"(p.v_cache + codes + c * 16), "r"(valid ? 16 : 0));
        }
      }
      BarrierArriveOnCopies(full(stage));
    });
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int cw = wg - 1;  // consumer warpgroup 0 or 1
  const int ctid = tid - 128 * wg, warp = ctid / 32, lane = ctid % 32, g = lane / 4, t4 = lane % 4;
  int ring = 0, n_item = 0;  // as the producer's
  ForEachItem<kKeys>(p, work, [&](const WorkItem& w) {
    // This item's Q (the producer's copies; fp16 for the fp16 kernel, converted by the producer).
    BarrierWait(q_full, n_item & 1);
    ++n_item;
    FenceProxyAsync();  // the copies (and conversions), before the tensor cores read them

    // This thread's two rows (g and g + 8 of its warp's 16) and their positions (-1: none).
    const int wr = w.r0 + cw * 64 + warp * 16;
    const int row_lo = wr + g, row_hi = wr + g + 8;
    const int pos_lo = row_lo < w.r0 + w.rows_here ? w.first_pos + row_lo / group : -1;
    const int pos_hi = row_hi < w.r0 + w.rows_here ? w.first_pos + row_hi / group : -1;
    const int wg_first_row = w.r0 + cw * 64;
    const bool wg_active = wg_first_row < w.r0 + w.rows_here;
    const int wg_first_pos = w.first_pos + wg_first_row / group;
    const int wg_last_pos = w.first_pos + min(wg_first_row + 63, w.r0 + w.rows_here - 1) / group;
    const int k_lo = w.k_lo, k_hi = w.k_hi, num_tiles = w.num_tiles;

    float o[kDBlocks][4];
#pragma unroll
    for (int n = 0; n < kDBlocks; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_lo = -FLT_MAX, m_hi = -FLT_MAX, l_lo = 0.0f, l_hi = 0.0f;

    // Tiles this warpgroup computes: those that start at or before its last row's position (a
    // prefix of the range); it still takes part in the ring for the rest.
    const int my_tiles = !wg_active ? 0 : min(num_tiles, max(0, (wg_last_pos - k_lo) / kKeys + 1));
    // Q is released once this warpgroup's last S is done (at once if it computes none).
    if (my_tiles == 0) BarrierArrive(q_empty);

    // Ping-pong: each warpgroup issues its GEMMs in its turn and then hands the turn over, so the
    // tensor cores run one warpgroup's MMAs while the other computes its softmax. Both take
    // num_tiles + 1 turns (a computing warpgroup issues once per tile and once more for the first
    // S; one with fewer tiles passes its remaining turns), warpgroup 0 first; warpgroup 1 does not
    // hand over its last turn, so every arrival is matched within the item.
    const bool turns = (flags & kFlagPingPong) != 0;
    const int total_turns = num_tiles + 1;
    int turn = 0;
    auto turn_begin = [&] {
      if (turns) TurnWait(cw);
    };
    auto turn_end = [&] {
      if (turns && !(cw == 1 && turn == total_turns - 1)) TurnPass(1 - cw);
      ++turn;
    };
    if (turns && cw == 1) TurnPass(0);

    // S = Q K^T of tile j into `sc` (issued, not waited for).
    auto issue_qk = [&](int j, float(&sc)[kNB][4]) {
      const int slot = ring + j, stage = slot % kStages;
      BarrierWait(full(stage), (slot / kStages) & 1);
      FenceProxyAsync();  // the producer's copies (made visible by the barrier), before wgmma reads
      // Accumulators pinned around the MMAs, so that no register copy is scheduled between them
      // (a copy reading an in-flight accumulator makes ptxas serialise every wgmma: C7514).
      wgmma::FenceOperands(sc);
      wgmma::Fence();
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const uint64_t da = Descriptor(q_s + cw * 64 * 128 + (ks >> 2) * kQSubTileBytes + (ks & 3) * 32, 16, 1024);
        const uint64_t db = Descriptor(k_s(stage) + (ks >> 2) * kSubTileBytes + (ks & 3) * 32, 16, 1024);
        if constexpr (kKeys == 128 && kHalf) {
          wgmma::SSF16N128(sc, da, db, ks > 0);
        } else if constexpr (kKeys == 128) {
          wgmma::SSBf16N128(sc, da, db, ks > 0);
        } else if constexpr (kHalf) {
          wgmma::SSF16N96(sc, da, db, ks > 0);
        } else {
          wgmma::SSBf16N96(sc, da, db, ks > 0);
        }
      }
      wgmma::Commit();
    };

    float c_lo = 1.0f, c_hi = 1.0f;  // the rescale of O that the last softmax asks for
    // kFlagEagerRescale: the running max follows every new maximum and O is rescaled every tile.
    const bool eager_rescale = (flags & kFlagEagerRescale) != 0;
    const float max_lag = eager_rescale ? 0.0f : kMaxLag;
    // S of tile j for this thread's entries again, from Q (global, bf16) and the stage's K (still
    // there until P_j V_j is done), as f32 sums of products in any order: for the lagging
    // kernel's warp whose exponentials against the lagging max overflowed, which needs a score
    // 2^128 past it, so practically never. `sc` holds that attempt's exponentials: an entry at 0
    // was masked or underflowed, and stays 0 against the higher max it is recomputed for, so it
    // is -FLT_MAX again without a dot product (nor a mask: a second call of `mask` made the
    // compiler keep its 64 tests in a register on every tile, and the positions it needs in
    // registers here spilled).
    auto recompute_s = [&](int j, float(&sc)[kNB][4]) {
      const uint32_t k_tile = k_s((ring + j) % kStages);
#pragma unroll 1
      for (int i = 0; i < 4 * kNB; ++i) {  // entry sc[i / 4][i % 4]: row_lo, or row_hi where i % 4 >= 2
        float was = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kNB; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if (i == 4 * nt + e) was = sc[nt][e];
          }
        }
        float dot = -FLT_MAX;
        if (was != 0.0f) {
          const int row = (i & 2) != 0 ? row_hi : row_lo, key = (i >> 2) * 8 + 2 * t4 + (i & 1);
          const uint4* q = reinterpret_cast<const uint4*>(
              p.q + static_cast<int64_t>(w.q_begin + row / group) * p.q_stride + (w.kvh * group + row % group) * D);
          dot = 0.0f;
#pragma unroll 1
          for (int c = 0; c < kChunks; ++c) {
            dot += Dot8<kHalf>(__ldg(q + c), LoadShared16(k_tile + TileOffset(key, c, kSubTileBytes)));
          }
        }
#pragma unroll
        for (int nt = 0; nt < kNB; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if (i == 4 * nt + e) sc[nt][e] = dot;
          }
        }
      }
    };
    const float inv_scale = 1.0f / p.scale_log2;
    // Mask keys of tile j past a row's position or the range (only on tiles that reach the first
    // row's position or k_hi), run the online softmax (the scale to log2 units folded in) and pack
    // P as the A fragments of the tile's k-steps of 16 keys.
    auto mask = [&](int j, float(&sc)[kNB][4]) {
      const int base = k_lo + j * kKeys;
      if (base + kKeys - 1 > wg_first_pos || base + kKeys > k_hi) {
#pragma unroll
        for (int nt = 0; nt < kNB; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = base + nt * 8 + 2 * t4 + e;
            if (key >= k_hi || key > pos_lo) sc[nt][e] = -FLT_MAX;
            if (key >= k_hi || key > pos_hi) sc[nt][2 + e] = -FLT_MAX;
          }
        }
      }
    };
    auto softmax = [&](int j, float(&sc)[kNB][4], uint32_t(&pa)[kPSteps][4], bool first) {
      mask(j, sc);
      constexpr bool kLagging = kSoftmax == static_cast<int>(HopperPrefillSoftmax::kLagging);
      if constexpr (kLagging) {
        float cx_lo = 1.0f, cx_hi = 1.0f;
        if (first) RaiseRowMax<kNB>(sc, p.scale_log2, m_lo, l_lo, m_hi, l_hi, cx_lo, cx_hi);
#pragma unroll 1
        for (int attempt = 0;; ++attempt) {
          // A second attempt only after an overflow: S again and the max raised to it, so that no
          // exponential passes 1 (one copy of the exponentials' code, not one per attempt).
          if (attempt > 0) {
            recompute_s(j, sc);
            float r_lo, r_hi;
            RaiseRowMax<kNB>(sc, p.scale_log2, m_lo, l_lo, m_hi, l_hi, r_lo, r_hi);
            cx_lo *= r_lo;
            cx_hi *= r_hi;
          }
          if (!LaggingFragmentSoftmax<kNB>(sc, p.scale_log2, inv_scale, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi)) break;
        }
        c_lo *= cx_lo;
        c_hi *= cx_hi;
      } else {
        ScaledFragmentSoftmax<kNB>(sc, p.scale_log2, max_lag, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi);
      }
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
        if constexpr (kHalf) {
          pa[kk][0] = PackHalf(sc[2 * kk][0], sc[2 * kk][1]);
          pa[kk][1] = PackHalf(sc[2 * kk][2], sc[2 * kk][3]);
          pa[kk][2] = PackHalf(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
          pa[kk][3] = PackHalf(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
        } else {
          pa[kk][0] = PackBf16(sc[2 * kk][0], sc[2 * kk][1]);
          pa[kk][1] = PackBf16(sc[2 * kk][2], sc[2 * kk][3]);
          pa[kk][2] = PackBf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
          pa[kk][3] = PackBf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
        }
      }
    };

    // O *= the rescale the last softmax asked for, where it asked for one (rarely past a row's
    // first tiles: kMaxLag).
    auto rescale = [&] {
      if (!eager_rescale && c_lo == 1.0f && c_hi == 1.0f) return;
#pragma unroll
      for (int n = 0; n < kDBlocks; ++n) {
        o[n][0] *= c_lo;
        o[n][1] *= c_lo;
        o[n][2] *= c_hi;
        o[n][3] *= c_hi;
      }
    };
    // O += P V (issued, not waited for): V [keys][d] is N-major; 16 keys are two 8-row groups
    // (stride 1024 bytes), the two 64-wide halves of d one sub-tile apart.
    auto issue_pv = [&](int stage, uint32_t(&pa)[kPSteps][4]) {
      wgmma::FenceOperands(o);
      wgmma::Fence();
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
        const uint64_t db = Descriptor(v_s(stage) + kk * 16 * 128, kSubTileBytes, 1024);
        if constexpr (D == 128) {
          if constexpr (kHalf) {
            wgmma::RSF16N128TransB(o, pa[kk], db);
          } else {
            wgmma::RSBf16N128TransB(o, pa[kk], db);
          }
        } else {
          if constexpr (kHalf) {
            wgmma::RSF16N64TransB(o, pa[kk], db);
          } else {
            wgmma::RSBf16N64TransB(o, pa[kk], db);
          }
        }
      }
      wgmma::Commit();
    };
    // One tile, software-pipelined as FlashAttention-3 does within a warpgroup: P_j is ready.
    // Rescale O, issue S_{j+1} = Q K_{j+1} and O += P_j V_j, then run the softmax of S_{j+1} while
    // P_j V_j is on the tensor cores (P double-buffered, so P_{j+1} does not overwrite the P_j the
    // MMAs read; as compiled, only the lagging softmax does: see kSoftmax above). Stage j is
    // released once P_j V_j is done; Q once the last S is. The last tile
    // has its own body: a run-time branch around the MMAs keeps ptxas from proving which group
    // a wait retires, and it then serialises every wgmma (C7514).
    float s[kNB][4];
    auto tile = [&](int j, uint32_t(&pcur)[kPSteps][4], uint32_t(&pnext)[kPSteps][4]) {
      rescale();
      turn_begin();
      issue_qk(j + 1, s);
      issue_pv((ring + j) % kStages, pcur);
      turn_end();
      wgmma::Wait<1>();  // S_{j+1}; P_j V_j may still run
      wgmma::FenceOperands(s);
      if (j + 2 == my_tiles) BarrierArrive(q_empty);
      softmax(j + 1, s, pnext, false);
      wgmma::Wait<0>();
      wgmma::FenceOperands(o);
      BarrierArrive(empty((ring + j) % kStages));
    };
    auto last_tile = [&](int j, uint32_t(&pcur)[kPSteps][4]) {
      rescale();
      turn_begin();
      issue_pv((ring + j) % kStages, pcur);
      turn_end();
      wgmma::Wait<0>();
      wgmma::FenceOperands(o);
      BarrierArrive(empty((ring + j) % kStages));
    };

    if (my_tiles > 0) {
      uint32_t p_a[kPSteps][4], p_b[kPSteps][4];
      turn_begin();
      issue_qk(0, s);
      turn_end();
      wgmma::Wait<0>();
      wgmma::FenceOperands(s);
      if (my_tiles == 1) BarrierArrive(q_empty);
      softmax(0, s, p_a, true);
      int j = 0;
      for (; j + 2 < my_tiles; j += 2) {
        tile(j, p_a, p_b);
        tile(j + 1, p_b, p_a);
      }
      if (j + 1 < my_tiles) {
        tile(j, p_a, p_b);
        last_tile(j + 1, p_b);
      } else {
        last_tile(j, p_a);
      }
    }
    for (int j = my_tiles; j < num_tiles; ++j) {  // tiles past this warpgroup's rows: pass them on
      turn_begin();
      turn_end();
      const int slot = ring + j;
      BarrierWait(full(slot % kStages), (slot / kStages) & 1);
      BarrierArrive(empty(slot % kStages));
    }
    while (turn < total_turns) {  // a warpgroup with no tiles of its own: its first-S turn
      turn_begin();
      turn_end();
    }
    ring += num_tiles;

    // The rows' sums from the quad's shares; m back in log2 units for CombineSplits.
    ReduceRowSums(l_lo, l_hi);
    const float ml_lo = m_lo == -FLT_MAX ? m_lo : m_lo * p.scale_log2;
    const float ml_hi = m_hi == -FLT_MAX ? m_hi : m_hi * p.scale_log2;
    // Each thread writes its rows' (g, g + 8) pieces: columns 2t, 2t+1 of every n-block.
    auto write_row = [&](int row, int pos, float m, float l, int half) {
      if (pos < 0) return;
      const int t = w.q_begin + row / group, h = w.kvh * group + row % group;
#pragma unroll
      for (int n = 0; n < kDBlocks; ++n) {
        const int d = n * 8 + 2 * t4;
        const float a0 = o[n][2 * half], a1 = o[n][2 * half + 1];
        if (p.num_splits == 1) {
          *reinterpret_cast<uint32_t*>(p.out + static_cast<int64_t>(t) * p.out_stride + h * D + d) =
              PackBf16(a0 / l, a1 / l);
        } else {
          const int64_t idx = (static_cast<int64_t>(w.split) * p.num_tokens + t) * p.q_heads + h;
          *reinterpret_cast<float2*>(&p.partial_out[idx * D + d]) = make_float2(a0, a1);
          if (n == 0 && t4 == 0) {
            p.partial_ml[idx * 2] = m;
            p.partial_ml[idx * 2 + 1] = l;
          }
        }
      }
    };
    write_row(row_lo, pos_lo, ml_lo, l_lo, 0);
    write_row(row_hi, pos_hi, ml_hi, l_hi, 1);
  });
#endif
}

// Whether the consumer warpgroups take turns issuing their GEMMs (FlashAttention-3's ping-pong):
// at head_dim 64, where it measured 1.07x (an H100, 16K; docs/performance.md), not at 128, where
// it measured 0.97-0.98x beside the intra-warpgroup pipeline and the lagging max (and 2-4% slower
// on the H200 before those; with the lagging softmax 0.95-0.96x, docs/performance.md, the
// twenty-ninth session). KVS_WGMMA_PINGPONG=1 or 0 sets it for every head dim (measurement).
bool PingPong(int head_dim) {
  static const int env = [] {
    const char* e = std::getenv("KVS_WGMMA_PINGPONG");
    const std::string_view v = e != nullptr ? e : "";
    return v == "1" ? 1 : v == "0" ? 0 : -1;
  }();
  return env >= 0 ? env == 1 : head_dim == 64;
}

// Whether O is rescaled every tile, as before the conditional rescale (kMaxLag): KVS_WGMMA_RESCALE=eager.
KernelChoice g_eager_rescale("KVS_WGMMA_RESCALE", "eager");
// The softmax (HopperPrefillSoftmax): -1 until read from KVS_WGMMA_SOFTMAX ("every-tile",
// "lagging"; unset or anything else: by head dim). By head dim, as measured on an H100 against
// each other in one call (docs/performance.md, the twenty-ninth session): the lagging max at 64
// (1.08x at 16K), the max on every tile at 128 (the lagging one 0.95x at 4K, 0.97x at 16K).
// Eager rescaling takes the every-tile kernel.
std::atomic<int> g_softmax{-1};
HopperPrefillSoftmax Softmax(int head_dim) {
  using S = HopperPrefillSoftmax;
  int v = g_softmax.load();
  if (v < 0) {
    const char* env = std::getenv("KVS_WGMMA_SOFTMAX");
    const std::string_view e = env != nullptr ? env : "";
    v = static_cast<int>(e == "every-tile" ? S::kEveryTile : e == "lagging" ? S::kLagging : S::kByHeadDim);
    g_softmax.store(v);
  }
  if (g_eager_rescale.Alternative()) return S::kEveryTile;
  const auto chosen = static_cast<S>(v);
  return chosen != S::kByHeadDim ? chosen : head_dim == 64 ? S::kLagging : S::kEveryTile;
}

// How many blocks the kernel launches (SetHopperPrefillBlocks): -2 until read from
// KVS_WGMMA_BLOCKS ("item": a block per item; a number: at most that many; unset: as many as
// the GPU holds at once).
std::atomic<int> g_blocks{-2};
int HopperPrefillBlocks() {
  int v = g_blocks.load();
  if (v == -2) {
    const char* env = std::getenv("KVS_WGMMA_BLOCKS");
    const std::string_view e = env != nullptr ? env : "";
    v = e == "item" ? kHopperPrefillBlockPerItem : 0;
    if (!e.empty() && e != "item") v = std::max(0, std::atoi(env));
    g_blocks.store(v);
  }
  return v;
}

// How quantized caches are read (QuantizedPrefillLoads): -1 until read from KVS_WGMMA_CODES.
std::atomic<int> g_quantized_loads{-1};

// How bf16/fp16 tiles are loaded (HopperPrefillKvLoads): -1 until read from KVS_WGMMA_KV
// ("copies": cp.async everywhere; unset or anything else: tensor copies where the pages allow).
// Launches that took tensor copies, counted for tests.
std::atomic<int> g_kv_loads{-1};
std::atomic<int64_t> g_tensor_copy_launches{0};
HopperPrefillKvLoads KvLoads() {
  int v = g_kv_loads.load();
  if (v < 0) {
    const char* env = std::getenv("KVS_WGMMA_KV");
    v = static_cast<int>(env != nullptr && std::string_view(env) == "copies" ? HopperPrefillKvLoads::kCopies
                                                                             : HopperPrefillKvLoads::kTensorCopies);
    g_kv_loads.store(v);
  }
  return static_cast<HopperPrefillKvLoads>(v);
}

// The tensor maps of p's K and V pools where this launch can take tensor copies (bf16/fp16 pages
// of a multiple of kKvTensorBoxKeys keys, every split starting at such a multiple, the maps
// encoded); else false, and the kernel copies by cp.async.
template <KvDType F, int D>
bool TensorCopyMaps(const Params& p, KvTensorMaps* maps) {
  if constexpr (F != KvDType::kBF16 && F != KvDType::kF16) {
    return false;
  } else {
    if (KvLoads() != HopperPrefillKvLoads::kTensorCopies) return false;
    if (p.num_splits > 1 && p.keys_per_split % kKvTensorBoxKeys != 0) return false;
    const KvPoolShape shape{D, p.kv_heads, p.block_size, p.num_blocks, p.row_bytes, p.block_bytes};
    return EncodeKvTensorMap(p.k_cache, shape, &maps->k) && EncodeKvTensorMap(p.v_cache, shape, &maps->v);
  }
}

// One instantiation of the kernel: its shared-memory limit raised once, launched or sized.
template <KvDType F, int D, int kKeys>
struct Instance {
  static constexpr size_t kSmem = WgmmaLayout<D, kKeys>::kSmem;
  template <HopperPrefillSoftmax S>
  static constexpr auto Kernel() {
    return PagedPrefillWgmmaKernel<F, D, kKeys, static_cast<int>(S)>;
  }
  template <HopperPrefillSoftmax S>
  static cudaError_t PrepareOne() {
    static const cudaError_t attr =
        cudaFuncSetAttribute(Kernel<S>(), cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
    return attr;
  }
  static cudaError_t Prepare() {
    using S = HopperPrefillSoftmax;
    const cudaError_t err = PrepareOne<S::kEveryTile>();
    return err != cudaSuccess ? err : PrepareOne<S::kLagging>();
  }
  static cudaError_t Launch(const Params& p, dim3 grid, cudaStream_t stream) {
    if (const cudaError_t attr = Prepare(); attr != cudaSuccess) return attr;
    int flags = (PingPong(D) ? kFlagPingPong : 0) | (g_eager_rescale.Alternative() ? kFlagEagerRescale : 0) |
                (GetQuantizedPrefillLoads() == QuantizedPrefillLoads::kRegisters ? 0 : kFlagStagedCodes);
    const int64_t items = static_cast<int64_t>(grid.x) * grid.y * grid.z;
    if (items == 0) return cudaSuccess;
    if (items > INT32_MAX) return cudaErrorInvalidValue;
    KvTensorMaps maps{};
    if (TensorCopyMaps<F, D>(p, &maps)) {
      flags |= kFlagTensorCopies;
      g_tensor_copy_launches.fetch_add(1, std::memory_order_relaxed);
    }
    const WorkItems work{static_cast<int32_t>(grid.x), static_cast<int32_t>(items)};
    const int choice = HopperPrefillBlocks();
    const int64_t held = choice > 0 ? choice : std::max<int64_t>(1, Resident(p.num_sms));
    const int64_t blocks = choice == kHopperPrefillBlockPerItem ? items : std::min(items, held);
    using S = HopperPrefillSoftmax;
    return pdl::Launch(Softmax(D) == S::kLagging ? Kernel<S::kLagging>() : Kernel<S::kEveryTile>(),
                       dim3(static_cast<unsigned>(blocks)), kWgmmaThreads, kSmem, stream, p, work, flags, maps);
  }
  static int64_t Resident(int num_sms) {
    if (Prepare() != cudaSuccess) return 0;  // Launch reports the error
    // The two kernels have the same shared memory and launch bounds, so the same residency.
    static const int64_t resident =
        ResidentBlocks(Kernel<HopperPrefillSoftmax::kEveryTile>(), kSmem, num_sms, kWgmmaThreads);
    return resident;
  }
};

// Keys per tile at head_dim 128: 128, measured 17% faster than 96 on an H200 at 16K (both
// without register spills; docs/performance.md); KVS_WGMMA_KEYS=96 runs the narrower tile for
// comparison. head_dim 64 and the quantized formats always take 128.
int KeysPerTile(int head_dim) {
  if (head_dim == 64) return 128;
  static const int keys = [] {
    const char* env = std::getenv("KVS_WGMMA_KEYS");
    return env != nullptr && std::string_view(env) == "96" ? 96 : 128;
  }();
  return keys;
}

// The one place where (dtype, head_dim, keys per tile) become template parameters: calls
// Op::template Run<Instance<...>>(args...) for the instantiation that serves them.
template <typename Op, KvDType F, typename... Args>
auto DispatchDim(int head_dim, Args&&... args) {
  if (head_dim == 64) return Op::template Run<Instance<F, 64, 128>>(args...);
  if constexpr (F == KvDType::kBF16 || F == KvDType::kF16) {
    if (KeysPerTile(head_dim) == 96) return Op::template Run<Instance<F, 128, 96>>(args...);
  }
  return Op::template Run<Instance<F, 128, 128>>(args...);
}
template <typename Op, typename... Args>
auto Dispatch(KvDType dtype, int head_dim, Args&&... args) {
  switch (dtype) {
    case KvDType::kF16: return DispatchDim<Op, KvDType::kF16>(head_dim, args...);
    case KvDType::kFP8: return DispatchDim<Op, KvDType::kFP8>(head_dim, args...);
    case KvDType::kINT8: return DispatchDim<Op, KvDType::kINT8>(head_dim, args...);
    case KvDType::kINT4: return DispatchDim<Op, KvDType::kINT4>(head_dim, args...);
    default: return DispatchDim<Op, KvDType::kBF16>(head_dim, args...);
  }
}

struct LaunchOp {
  template <typename I>
  static cudaError_t Run(const Params& p, dim3 grid, cudaStream_t stream) {
    return I::Launch(p, grid, stream);
  }
};
struct ResidentOp {
  template <typename I>
  static int64_t Run(int num_sms) {
    return I::Resident(num_sms);
  }
};

}  // namespace

int32_t WgmmaPrefillRows() { return kWgmmaRows; }

bool WgmmaPrefillSupports(KvDType dtype, int head_dim) {
  return dtype != KvDType::kF32 && (head_dim == 64 || head_dim == 128);
}

int64_t WgmmaPrefillResidentBlocks(KvDType dtype, int head_dim, int num_sms) {
  return Dispatch<ResidentOp>(dtype, head_dim, num_sms);
}

cudaError_t LaunchWgmmaPrefill(const Params& p, KvDType dtype, int head_dim, dim3 grid, cudaStream_t stream) {
  if (!WgmmaPrefillSupports(dtype, head_dim)) return cudaErrorInvalidValue;
  return Dispatch<LaunchOp>(dtype, head_dim, p, grid, stream);
}

}  // namespace kvs::cuda::attention

namespace kvs::cuda {
namespace {
KernelChoice g_prefill_kernel("KVS_PREFILL_KERNEL", "mma");  // alternative: the mma.sync kernel
}  // namespace

void SetPrefillKernel(PrefillKernel kernel) { g_prefill_kernel.Set(kernel == PrefillKernel::kMma); }

void SetHopperPrefillBlocks(int32_t blocks) { attention::g_blocks.store(std::max(blocks, kHopperPrefillBlockPerItem)); }

void SetHopperPrefillEagerRescale(bool eager) { attention::g_eager_rescale.Set(eager); }

void SetHopperPrefillSoftmax(HopperPrefillSoftmax softmax) { attention::g_softmax.store(static_cast<int>(softmax)); }

void SetHopperPrefillKvLoads(HopperPrefillKvLoads loads) { attention::g_kv_loads.store(static_cast<int>(loads)); }

int64_t HopperPrefillTensorCopyLaunches() { return attention::g_tensor_copy_launches.load(); }

void SetQuantizedPrefillLoads(QuantizedPrefillLoads loads) {
  attention::g_quantized_loads.store(static_cast<int>(loads));
}

QuantizedPrefillLoads GetQuantizedPrefillLoads() {
  int v = attention::g_quantized_loads.load();
  if (v < 0) {
    const char* env = std::getenv("KVS_WGMMA_CODES");
    const std::string_view e = env != nullptr ? env : "";
    const QuantizedPrefillLoads loads = e == "decoded"     ? QuantizedPrefillLoads::kDecodedFirst
                                        : e == "staged"    ? QuantizedPrefillLoads::kStagedInPlace
                                        : e == "registers" ? QuantizedPrefillLoads::kRegisters
                                                           : QuantizedPrefillLoads::kAuto;
    v = static_cast<int>(loads);
    attention::g_quantized_loads.store(v);
  }
  return static_cast<QuantizedPrefillLoads>(v);
}

int64_t PrefillKvScratchBytes(KvDType dtype, int32_t block_size, int32_t kv_heads, int32_t head_dim,
                              int64_t max_context) {
  const bool codes = dtype == KvDType::kFP8 || dtype == KvDType::kINT8 || dtype == KvDType::kINT4;
  const bool kivi = KvChannelQuantized(dtype) && KiviPrefillDecodesFirst();
  if (!(codes || kivi) || (head_dim != 64 && head_dim != 128) || !HopperPrefillDevice() || block_size <= 0 ||
      max_context <= 0) {
    return 0;
  }
  const int64_t bytes =
      attention::DecodedFirstLayoutFor(block_size, kv_heads, head_dim, max_context).Bytes(/*num_seqs=*/1);
  return std::min(bytes, kMaxPrefillKvScratchBytes);
}

bool UseHopperPrefill() { return !g_prefill_kernel.Alternative() && HopperPrefillDevice(); }

bool HopperPrefillDevice() {
  // sm_90a code runs on compute capability 9.0 only; each rank keeps to one device.
  static std::atomic<int> hopper_device[64];  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
  int known = hopper_device[dev].load();
  if (known == 0) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    known = major == 9 && minor == 0 ? 1 : 2;
    hopper_device[dev].store(known);
  }
  return known == 1;
}

}  // namespace kvs::cuda
