// Pieces shared by the paged attention kernels: the kernel parameters, the key-split planner,
// asynchronous copies, reading one (token, head) row of the cache in any KvDType, raw tile
// staging for the tensor-core kernels and the mma.m16n8k16 helpers.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "kernels/common/kv_format.h"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace attention {

constexpr int kThreads = 128;
constexpr int kTile = 32;  // keys per tile: one per lane in the softmax step
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  const bf16* q;
  int64_t q_stride;
  bf16* out;
  int64_t out_stride;
  const unsigned char* k_cache;
  const unsigned char* v_cache;
  int64_t block_bytes;  // one block of one layer's K (or V), codes and scales
  int64_t num_blocks;   // blocks in k_cache (and v_cache)
  int32_t row_bytes;    // one (token, head)'s codes
  int32_t scale_bytes;  // one (token, head)'s scales
  int32_t block_size;
  int32_t block_shift;  // log2(block_size) when it is a power of two, else -1 (a shift, not a division)
  int32_t kv_heads;
  int32_t q_heads;
  const int32_t* query_start;
  const int32_t* context_len;
  const int32_t* block_table;
  int32_t max_blocks_per_seq;
  float scale_log2;  // softmax scale * log2(e)
  int32_t keys_per_split;
  int32_t num_splits;
  int32_t row_chunks;  // grid.x = num_splits * row_chunks
  int32_t num_tokens;
  float* partial_out;
  float* partial_ml;
  // The output also rounded for the block GEMV by CombineSplits where round.q is set
  // (activation_rounding.cuh; head_dim a multiple of 32).
  QuantizedActivations round;
  // Host-side planning inputs (not read by the kernels).
  int32_t max_context_len;
  int64_t workspace_floats;
  int32_t num_sms;
  void* kv_scratch;  // AttentionWorkspace::kv_scratch
  int64_t kv_scratch_bytes;
  bool* rounded;  // set when CombineSplits rounded the output (round.q set and the keys split)
};

// The parameters every tiled kernel takes, from the cache view, the batch and the workspace (row
// chunks and key splits are planned per kernel: LaunchAttentionFor, PlanSplits).
inline Params MakeParams(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                         const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                         const AttentionWorkspace& ws) {
  Params p{};
  p.q = q;
  p.q_stride = q_stride;
  p.out = out;
  p.out_stride = out_stride;
  p.k_cache = static_cast<const unsigned char*>(cache.k);
  p.v_cache = static_cast<const unsigned char*>(cache.v);
  p.block_bytes = cache.BlockBytes();
  p.num_blocks = cache.num_blocks;
  p.row_bytes = static_cast<int32_t>(cache.RowBytes());
  p.scale_bytes = static_cast<int32_t>(cache.ScaleBytes());
  p.block_size = cache.block_size;
  p.block_shift = -1;
  for (int shift = 0; shift < 31; ++shift) {
    if ((1 << shift) == cache.block_size) p.block_shift = shift;
  }
  p.kv_heads = cache.kv_heads;
  p.q_heads = q_heads;
  p.query_start = batch.query_start;
  p.context_len = batch.context_len;
  p.block_table = batch.block_table;
  p.max_blocks_per_seq = batch.max_blocks_per_seq;
  p.scale_log2 = scale * kLog2e;
  p.num_tokens = batch.num_tokens;
  p.partial_out = ws.partial_out;
  p.partial_ml = ws.partial_ml;
  p.max_context_len = batch.max_context_len;
  p.workspace_floats = ws.capacity_floats;
  p.num_sms = ws.num_sms;
  p.kv_scratch = ws.kv_scratch;
  p.kv_scratch_bytes = ws.kv_scratch_bytes;
  return p;
}

// Splits along the keys. Three things matter, all measured on an H200 (docs/performance.md):
// the last wave of resident blocks should be full (1.3 waves leaves the GPU idle in the
// second), about three waves keep memory busy while blocks finish at different times, and every
// split costs partial writes and a longer combine (a split of fewer than kMinKeysPerSplit keys
// never pays). `base` blocks exist without splitting; `resident` fit on the GPU at once.
constexpr int kMinKeysPerSplit = 512;
// Except where even splits of kMinKeysPerSplit keys would leave the GPU three-quarters idle (a
// batch-1 decode step over a short context: 8 blocks for Llama-3-8B's KV heads at 640 keys, each
// walking every key alone, 15 us a layer on an H100): there the rows are split into as many
// kShortKeysPerSplit-key splits as fit in one wave, latency being all that is left to save.
constexpr int kShortKeysPerSplit = 128;

inline int ChooseSplits(int64_t base, int64_t resident, int max_splits) {
  int best = 1;
  double best_score = -1.0;
  for (int s = 1; s <= max_splits; ++s) {
    const double waves = static_cast<double>(base * s) / static_cast<double>(resident);
    const double fill = waves / std::ceil(waves);
    const double score = fill * std::min(1.0, waves / 3.0) - 0.004 * s;
    if (score > best_score) {
      best_score = score;
      best = s;
    }
  }
  return best;
}

// Resident blocks of `kernel` on the whole GPU (cached per kernel by the caller).
template <typename Kernel>
int64_t ResidentBlocks(Kernel kernel, size_t smem, int num_sms, int threads = kThreads) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess || per_sm < 1) {
    cudaGetLastError();
    per_sm = 1;
  }
  return static_cast<int64_t>(per_sm) * num_sms;
}

// Counts the split merge's launches that take their partials with the maxima (paged_attention.cu).
void CountCombineEarlyLaunch();

// Fills p.keys_per_split / p.num_splits and the grid for `resident` blocks at once.
inline void PlanSplits(Params& p, dim3& grid, int64_t resident, int head_dim) {
  const int max_tiles = (p.max_context_len + kTile - 1) / kTile;
  const int64_t base = static_cast<int64_t>(p.row_chunks) * grid.y * grid.z;
  const int64_t per_split = static_cast<int64_t>(p.num_tokens) * p.q_heads * head_dim;
  const int64_t workspace_splits = std::max<int64_t>(1, p.workspace_floats / per_split);
  const int max_splits =
      static_cast<int>(std::min<int64_t>(std::max(1, p.max_context_len / kMinKeysPerSplit), workspace_splits));
  // KVS_ATTENTION_SPLITS=N (a measurement knob, bench only): N splits of at least one tile each,
  // as the workspace allows (below kMinKeysPerSplit too, so the short-context plan's split
  // length can be measured).
  static const int forced = [] {
    const char* env = std::getenv("KVS_ATTENTION_SPLITS");
    return env != nullptr ? std::atoi(env) : 0;
  }();
  int splits = forced > 0 ? static_cast<int>(std::min<int64_t>({forced, max_tiles, workspace_splits}))
                          : ChooseSplits(base, resident, max_splits);
  if (forced <= 0 && base * max_splits * 4 <= resident) {
    const int64_t short_splits =
        std::min<int64_t>(std::max(1, p.max_context_len / kShortKeysPerSplit), resident / base);
    splits = static_cast<int>(std::min<int64_t>(short_splits, workspace_splits));
  }
  const int tiles_per_split = (max_tiles + splits - 1) / splits;
  p.keys_per_split = tiles_per_split * kTile;
  p.num_splits = (max_tiles + tiles_per_split - 1) / tiles_per_split;
  grid.x = p.num_splits * p.row_chunks;
}

// --- Reading the cache in any KvDType ---------------------------------------------------------
// Byte offsets of key `pos`'s codes and scales for KV head `kvh` (kernels/common/kv_format.h).
struct KvRow {
  int64_t codes = 0;
  int64_t scales = 0;
};
// The row of position `pos` (head kvh) in cache block `block` (the block table's entry for pos).
__device__ inline KvRow LocateKvIn(const Params& p, int32_t block, int pos, int kvh) {
  const int64_t base = static_cast<int64_t>(block) * p.block_bytes;
  const int64_t idx = static_cast<int64_t>(pos % p.block_size) * p.kv_heads + kvh;
  return KvRow{base + idx * p.row_bytes,
               base + static_cast<int64_t>(p.block_size) * p.kv_heads * p.row_bytes + idx * p.scale_bytes};
}
__device__ inline KvRow LocateKv(const Params& p, const int32_t* blocks, int pos, int kvh) {
  return LocateKvIn(p, blocks[pos / p.block_size], pos, kvh);
}

__device__ inline float2 Fp8PairToFloat2(uint32_t two_codes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_codes), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// int8 code `byte` of `word` -> f32 without a conversion instruction (which runs at a quarter of
// the ALU's rate): one byte permute puts code + 128 under the exponent of 2^23.
__device__ inline float Int8ToFloat(uint32_t word, int byte) {
  const uint32_t f = __byte_perm(word ^ 0x80808080u, 0x4B000000u, 0x7540u | byte);  // 2^23 + (code + 128)
  return __uint_as_float(f) - 8388736.0f;
}

// Elements [e0, e0 + 8) of a row whose codes and scales are at `codes` / `scales` (global or
// shared memory), decoded to f32. e0 is a multiple of 8.
template <KvDType F>
__device__ inline void Decode8f(const unsigned char* codes, const unsigned char* scales, int e0, float* out) {
  if constexpr (F == KvDType::kBF16 || F == KvDType::kF16) {
    const uint4 u = *reinterpret_cast<const uint4*>(codes + e0 * 2);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float2 f;
      if constexpr (F == KvDType::kBF16) {
        f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
      } else {
        f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      }
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else if constexpr (F == KvDType::kFP8 || F == KvDType::kINT8) {
    const uint2 u = *reinterpret_cast<const uint2*>(codes + e0);
    const float s = *reinterpret_cast<const float*>(scales);
    const uint32_t w[2] = {u.x, u.y};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if constexpr (F == KvDType::kFP8) {
        const float2 a = Fp8PairToFloat2(w[i] & 0xffffu), b = Fp8PairToFloat2(w[i] >> 16);
        out[4 * i] = a.x * s, out[4 * i + 1] = a.y * s, out[4 * i + 2] = b.x * s, out[4 * i + 3] = b.y * s;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) out[4 * i + j] = Int8ToFloat(w[i], j) * s;
      }
    }
  } else {  // kINT4: eight nibbles, one (scale, zero) pair for the group
    const uint32_t w = *reinterpret_cast<const uint32_t*>(codes + e0 / 2);
    const float2 sz = __half22float2(*reinterpret_cast<const __half2*>(scales + (e0 / kKvInt4Group) * 4));
#pragma unroll
    for (int j = 0; j < 8; ++j) {  // 2^23 + nibble, exact, with no conversion instruction
      const float c = __uint_as_float(((w >> (4 * j)) & 0xfu) | 0x4B000000u) - 8388608.0f;
      out[j] = c * sz.x + sz.y;
    }
  }
}

template <KvDType F>
__device__ inline void Load8f(const unsigned char* cache, KvRow r, int e0, float* out) {
  Decode8f<F>(cache + r.codes, cache + r.scales, e0, out);
}

// Elements [e0, e0 + 16) as f32, with the widest loads the format allows (the register kernel).
// fp8/int8 return the unscaled codes and their row's scale in `*scale` (the kernel folds it into
// the score and the probability); the other formats return values and leave `*scale` alone.
template <KvDType F>
__device__ inline void Load16f(const unsigned char* cache, KvRow r, int e0, float* out, float* scale) {
  if constexpr (F == KvDType::kFP8 || F == KvDType::kINT8) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(cache + r.codes + e0));
    *scale = __ldg(reinterpret_cast<const float*>(cache + r.scales));
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (F == KvDType::kFP8) {
        const float2 a = Fp8PairToFloat2(w[i] & 0xffffu), b = Fp8PairToFloat2(w[i] >> 16);
        out[4 * i] = a.x, out[4 * i + 1] = a.y, out[4 * i + 2] = b.x, out[4 * i + 3] = b.y;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) out[4 * i + j] = Int8ToFloat(w[i], j);
      }
    }
  } else if constexpr (F == KvDType::kINT4) {
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(cache + r.codes + e0 / 2));
    const float2 sz = __half22float2(__ldg(reinterpret_cast<const __half2*>(cache + r.scales + (e0 / kKvInt4Group) * 4)));
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      out[j] = static_cast<float>((u.x >> (4 * j)) & 0xfu) * sz.x + sz.y;
      out[8 + j] = static_cast<float>((u.y >> (4 * j)) & 0xfu) * sz.x + sz.y;
    }
  } else {
    Load8f<F>(cache, r, e0, out);
    Load8f<F>(cache, r, e0 + 8, out + 8);
  }
}

__device__ inline uint32_t PackBf16(float lo, float hi);
__device__ inline uint32_t PackHalf(float lo, float hi);

// Elements [e0, e0 + 8) of a row into shared memory as bf16 (16 bytes at `smem`); `valid` false
// stores zeros. bf16 goes asynchronously (the caller commits and waits); the other formats are
// decoded here.
template <KvDType F>
__device__ inline void StageKv8(bf16* smem, const unsigned char* cache, KvRow r, int e0, bool valid) {
  if constexpr (F == KvDType::kBF16) {
    CopyAsync16(smem, cache + r.codes + e0 * 2, valid);
  } else {
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (valid) {
      float f[8];
      Load8f<F>(cache, r, e0, f);
      packed = make_uint4(PackBf16(f[0], f[1]), PackBf16(f[2], f[3]), PackBf16(f[4], f[5]), PackBf16(f[6], f[7]));
    }
    *reinterpret_cast<uint4*>(smem) = packed;
  }
}

// --- Raw staging for the tensor-core kernels ---------------------------------------------------
// Encoded formats stream into shared memory as they are stored (codes, then the scales padded to
// 16 bytes), asynchronously and two tiles deep like bf16; a cheap shared-to-shared pass then
// decodes the tile to bf16 for the MMAs. So the global loads of tile i+1 overlap the math of
// tile i, and fewer bytes cross the memory bus than with a bf16 cache.
template <KvDType F, int D>
__host__ __device__ constexpr int RawRowBytes() {
  return static_cast<int>(KvRowBytes(F, D)) + (KvScaleBytes(F, D) > 0 ? 16 : 0);
}

// The block-table index of position `pos` (a shift where the block size is a power of two).
__device__ inline int BlockIndex(const Params& p, int pos) {
  return p.block_shift >= 0 ? pos >> p.block_shift : pos / p.block_size;
}

// Rows of a tile of kKeys keys from `base`. When the tile lies inside one cache block
// (block_size a multiple of kKeys, base aligned: every decode tile with the default block size)
// the block-table lookup and the division by block_size happen once per tile, not once per row.
struct TileRows {
  int64_t block_base = -1;  // byte offset of the tile's block; -1: look each row up
  int slot0 = 0;            // the tile's first slot in that block
};
template <int kKeys>
__device__ inline TileRows LocateTile(const Params& p, const int32_t* blocks, int base, int k_hi) {
  TileRows t;
  if (base < k_hi && p.block_size % kKeys == 0 && base % kKeys == 0) {
    const int block = BlockIndex(p, base);
    t.block_base = static_cast<int64_t>(blocks[block]) * p.block_bytes;
    t.slot0 = base - block * p.block_size;
  }
  return t;
}
// Inside a block the offsets are 32-bit (a block is far below 2 GiB): one 64-bit add per row.
__device__ inline KvRow LocateInTile(const Params& p, const int32_t* blocks, TileRows t, int base, int key, int kvh) {
  if (t.block_base < 0) return LocateKv(p, blocks, base + key, kvh);
  const uint32_t idx = static_cast<uint32_t>((t.slot0 + key) * p.kv_heads + kvh);
  const uint32_t scales0 = static_cast<uint32_t>(p.block_size * p.kv_heads * p.row_bytes);
  return KvRow{t.block_base + idx * static_cast<uint32_t>(p.row_bytes),
               t.block_base + (scales0 + idx * static_cast<uint32_t>(p.scale_bytes))};
}

// Queues the codes and scales of keys [base, base + kKeys) (up to k_hi) for K and V into raw
// tiles of kKeys rows of RawRowBytes; `worker` of `workers` threads share the copies. Rows of
// few chunks (int4) go one (key, K|V) row per thread, computing its address once; rows of many
// (fp8/int8: eight 16-byte chunks and a scale) are spread a chunk per thread, which keeps more
// copies in flight (both measured on the H200, docs/performance.md).
template <KvDType F, int D, int kKeys>
__device__ inline void RawLoadTile(unsigned char* k_raw, unsigned char* v_raw, const Params& p, const int32_t* blocks,
                                   int base, int k_hi, int kvh, int worker, int workers) {
  constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
  constexpr int kScaleBytes = static_cast<int>(KvScaleBytes(F, D));
  constexpr int kRaw = RawRowBytes<F, D>();
  constexpr int kCodeChunks = kRowBytes / 16;
  constexpr int kChunks = kCodeChunks + (kScaleBytes > 0 ? 1 : 0);
  static_assert(kRowBytes % 16 == 0, "rows of whole 16-byte chunks");
  const TileRows tile = LocateTile<kKeys>(p, blocks, base, k_hi);
  if constexpr (kChunks <= 5) {
    for (int r = worker; r < 2 * kKeys; r += workers) {
      const int key = r % kKeys;
      const bool is_v = r >= kKeys;
      const int pos = base + key;
      const bool valid = pos < k_hi;
      const KvRow row = valid ? LocateInTile(p, blocks, tile, base, key, kvh) : KvRow{};
      unsigned char* dst = (is_v ? v_raw : k_raw) + key * kRaw;
      const unsigned char* src = is_v ? p.v_cache : p.k_cache;
#pragma unroll
      for (int c = 0; c < kCodeChunks; ++c) CopyAsyncN<16>(dst + c * 16, src + row.codes + c * 16, valid);
      if constexpr (kScaleBytes > 0) CopyAsyncN<kScaleBytes>(dst + kRowBytes, src + row.scales, valid);
    }
  } else {
    for (int i = worker; i < kKeys * kChunks; i += workers) {
      const int key = i / kChunks, chunk = i % kChunks;
      const int pos = base + key;
      const bool valid = pos < k_hi;
      const KvRow row = valid ? LocateInTile(p, blocks, tile, base, key, kvh) : KvRow{};
      if (chunk < kCodeChunks) {
        CopyAsyncN<16>(k_raw + key * kRaw + chunk * 16, p.k_cache + row.codes + chunk * 16, valid);
        CopyAsyncN<16>(v_raw + key * kRaw + chunk * 16, p.v_cache + row.codes + chunk * 16, valid);
      } else if constexpr (kScaleBytes > 0) {
        CopyAsyncN<kScaleBytes>(k_raw + key * kRaw + kRowBytes, p.k_cache + row.scales, valid);
        CopyAsyncN<kScaleBytes>(v_raw + key * kRaw + kRowBytes, p.v_cache + row.scales, valid);
      }
    }
  }
}

// fp8 and int8 codes are exact in fp16, so kernels can multiply the codes themselves on fp16
// tensor cores and apply the per-key scales to the scores (K) and probabilities (V) instead of
// to every element: one or two instructions per element pair, no conversion to f32.
__device__ inline void Int8x4ToHalf2x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t u = w ^ 0x80808080u;         // offset binary: code + 128 in [1, 255]
  lo = __byte_perm(u, 0x64646464u, 0x4140);   // fp16 0x64uu = 1024 + uu, bytes 0 and 1
  hi = __byte_perm(u, 0x64646464u, 0x4342);   // bytes 2 and 3
  const __half2 bias = __float2half2_rn(1152.0f);
  *reinterpret_cast<__half2*>(&lo) = __hsub2(*reinterpret_cast<const __half2*>(&lo), bias);
  *reinterpret_cast<__half2*>(&hi) = __hsub2(*reinterpret_cast<const __half2*>(&hi), bias);
}
__device__ inline uint32_t Fp8x2ToHalf2(uint32_t two_codes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two_codes), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}

// Whether the prefill kernel keeps format F's per-key scale out of its K tile (the tile holds
// the codes, exact in fp16, and the scale multiplies the key's scores).
template <KvDType F>
constexpr bool kFoldKeyScale = F == KvDType::kFP8 || F == KvDType::kINT8;

// Eight codes of format F into four fp16x2 words. fp8/int8: `w` two words of codes, `scale` the
// bits of the row's f32 scale; values are codes x scale in fp16 (kCodesOnly: the bare codes,
// exact in fp16). int4: `w[0]` eight nibbles (nibble j is element j), `scale` the bits of the
// group's (scale, zero) half2; values go through f32. Shared by the prefill kernels' decoders.
template <KvDType F, bool kCodesOnly>
__device__ inline void CodesToHalf8(const uint32_t* w, uint32_t scale, uint32_t (&h)[4]) {
  if constexpr (F == KvDType::kINT4) {
    static_assert(!kCodesOnly, "int4 decodes to values (a scale and zero per group)");
    const float2 sz = __half22float2(*reinterpret_cast<const __half2*>(&scale));
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // 2^23 + nibble, exact, with no conversion instruction
      const float c0 = __uint_as_float(((w[0] >> (8 * j)) & 0xfu) | 0x4B000000u) - 8388608.0f;
      const float c1 = __uint_as_float(((w[0] >> (8 * j + 4)) & 0xfu) | 0x4B000000u) - 8388608.0f;
      h[j] = PackHalf(c0 * sz.x + sz.y, c1 * sz.x + sz.y);
    }
  } else {
    static_assert(F == KvDType::kFP8 || F == KvDType::kINT8, "a code format");
    if constexpr (F == KvDType::kINT8) {
      Int8x4ToHalf2x2(w[0], h[0], h[1]);
      Int8x4ToHalf2x2(w[1], h[2], h[3]);
    } else {
      h[0] = Fp8x2ToHalf2(w[0] & 0xffffu), h[1] = Fp8x2ToHalf2(w[0] >> 16);
      h[2] = Fp8x2ToHalf2(w[1] & 0xffffu), h[3] = Fp8x2ToHalf2(w[1] >> 16);
    }
    if constexpr (!kCodesOnly) {
      const __half2 s = __float2half2_rn(__uint_as_float(scale));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const __half2 v = __hmul2(*reinterpret_cast<const __half2*>(&h[j]), s);
        h[j] = *reinterpret_cast<const uint32_t*>(&v);
      }
    }
  }
}

// Decodes a raw tile of kKeys rows into an fp16 tile of rows kRowElems apart: for fp8/int8 K
// (kCodesOnly) the codes, else the values. fp8/int8 values are codes times the row's scale in
// fp16 (a scale below fp16's normal range, 6e-5, costs at most 8e-6 of absolute error on an
// element: a row whose elements are all below 0.008); int4 goes through f32.
template <KvDType F, int D, int kKeys, int kRowElems, bool kCodesOnly>
__device__ inline void DecodeRawTileHalf(const unsigned char* raw, __half* tile, int worker, int workers) {
  constexpr int kRaw = RawRowBytes<F, D>();
  constexpr int kRowBytes = static_cast<int>(KvRowBytes(F, D));
  for (int i = worker; i < kKeys * (D / 8); i += workers) {
    const int key = i / (D / 8), vec = i % (D / 8);
    const unsigned char* row = raw + key * kRaw;
    uint32_t h[4];
    if constexpr (F == KvDType::kINT4) {
      CodesToHalf8<F, kCodesOnly>(reinterpret_cast<const uint32_t*>(row + vec * 4),
                                  *reinterpret_cast<const uint32_t*>(row + kRowBytes + (vec * 8 / kKvInt4Group) * 4), h);
    } else {
      const uint2 u = *reinterpret_cast<const uint2*>(row + vec * 8);
      const uint32_t w[2] = {u.x, u.y};
      CodesToHalf8<F, kCodesOnly>(w, *reinterpret_cast<const uint32_t*>(row + kRowBytes), h);
    }
    *reinterpret_cast<uint4*>(tile + key * kRowElems + vec * 8) = make_uint4(h[0], h[1], h[2], h[3]);
  }
}
// Tensor-core helpers (mma.m16n8k16, bf16 in, fp32 accumulate).
// Four 8x8 bf16 matrices from shared memory, transposed: lane L gives the row address of matrix
// L / 8. Used for V, stored [key][d], whose B fragments want (2 keys, 1 d) pairs.
__device__ inline void LdMatrixX4Trans(uint32_t* r, const void* smem_row) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ inline void MmaBf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ inline void MmaF16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ inline uint32_t PackHalf(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ inline uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}


// exp2 by the SFU's approximation (2 ulp, flushes what would be subnormal to 0): exp2f's
// subnormal-safe wrapper costs four more instructions per call, and an attention weight below
// 2^-126 is 0 to every sum here.
__device__ inline float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ inline float FastLog2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The largest score of rows g (entries 0, 1) and g + 8 (2, 3) over a tile's NT n-tiles, across
// the row's quad (FragmentSoftmax and the Hopper prefill's ScaledFragmentSoftmax).
template <int NT>
__device__ inline void FragmentRowMax(const float (&sc)[NT][4], float& mx_lo, float& mx_hi) {
  mx_lo = -FLT_MAX, mx_hi = -FLT_MAX;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    mx_lo = fmaxf(mx_lo, fmaxf(sc[nt][0], sc[nt][1]));
    mx_hi = fmaxf(mx_hi, fmaxf(sc[nt][2], sc[nt][3]));
  }
  for (int off = 1; off < 4; off <<= 1) {
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
  }
}

// The online-softmax update of one key tile held in MMA accumulator fragments: `sc` has NT
// n-tiles of S for rows g (entries 0, 1) and g + 8 (2, 3), masked keys already -FLT_MAX. On
// return `sc` holds the unnormalised probabilities (0 where masked), the rows' running max m and
// sum l are updated, and c is the factor the rows' O must be scaled by. A row lives in one quad.
template <int NT>
__device__ inline void FragmentSoftmax(float (&sc)[NT][4], float& m_lo, float& l_lo, float& m_hi, float& l_hi,
                                       float& c_lo, float& c_hi) {
  float mx_lo, mx_hi;
  FragmentRowMax<NT>(sc, mx_lo, mx_hi);
  const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
  // Masked scores (-FLT_MAX) give exp2(-FLT_MAX - m) = 0 with no test per element, as long as
  // the subtrahend is finite: a row with no unmasked key yet subtracts 0 instead of -FLT_MAX.
  const float ms_lo = mn_lo == -FLT_MAX ? 0.0f : mn_lo, ms_hi = mn_hi == -FLT_MAX ? 0.0f : mn_hi;
  c_lo = FastExp2(m_lo - ms_lo);  // 0 while the row had no keys (m = -FLT_MAX)
  c_hi = FastExp2(m_hi - ms_hi);
  float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      sc[nt][j] = FastExp2(sc[nt][j] - ms_lo);
      sc[nt][2 + j] = FastExp2(sc[nt][2 + j] - ms_hi);
      sum_lo += sc[nt][j];
      sum_hi += sc[nt][2 + j];
    }
  }
  for (int off = 1; off < 4; off <<= 1) {
    sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, off);
    sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, off);
  }
  l_lo = l_lo * c_lo + sum_lo;
  l_hi = l_hi * c_hi + sum_hi;
  m_lo = mn_lo;
  m_hi = mn_hi;
}

// One 16-key tile of a decode MMA kernel from key `base`: keys base + 2t + nt * 8 + j at or past
// k_hi are masked (only the range's last tile has any), then FragmentSoftmax.
__device__ inline void DecodeTileSoftmax(float (&sc)[2][4], int base, int k_hi, float& m_lo, float& l_lo, float& m_hi,
                                         float& l_hi, float& c_lo, float& c_hi) {
  if (base + 16 > k_hi) {
    const int key0 = base + 2 * (threadIdx.x % 4);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if (key0 + nt * 8 + j >= k_hi) sc[nt][j] = sc[nt][2 + j] = -FLT_MAX;
      }
    }
  }
  FragmentSoftmax<2>(sc, m_lo, l_lo, m_hi, l_hi, c_lo, c_hi);
}

// End of the decode MMA kernels: merges the warps' running (max, sum, O) and writes the group's
// output rows, or this split's partial. Each lane holds O fragments o[n][0..3] for rows g and
// g + 8 (see PagedDecodeMmaKernel); `dim_of(n, col)` names the head-dim element that column `col`
// of n-tile n holds, so kernels that permute the head dimension share this code. Row maxima and
// sums go through `merge_ml`; the warps add their rescaled O in turn into `o_s`, 16 x D floats of
// shared memory the caller no longer needs, kept in fragment order (slot n * 8 + col): a permuted
// dim order there would put a warp's 32 lanes on one bank.
template <int D, int kNTiles, typename DimOf>
__device__ inline void MergeDecodeWarps(const Params& p, const float (&o)[kNTiles][4], float m_lo, float l_lo, float m_hi,
                                        float l_hi, float* o_s, float (*merge_ml)[16][2], int tok, int kvh, int split,
                                        DimOf dim_of) {
  constexpr int kWarps = kThreads / 32;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int group = p.q_heads / p.kv_heads;
  if (t4 == 0) {
    merge_ml[warp][g][0] = m_lo;
    merge_ml[warp][g][1] = l_lo;
    merge_ml[warp][g + 8][0] = m_hi;
    merge_ml[warp][g + 8][1] = l_hi;
  }
  __syncthreads();
  float gm_lo = -FLT_MAX, gm_hi = -FLT_MAX;  // block-wide row maxima
  for (int w = 0; w < kWarps; ++w) {
    gm_lo = fmaxf(gm_lo, merge_ml[w][g][0]);
    gm_hi = fmaxf(gm_hi, merge_ml[w][g + 8][0]);
  }
  const float s_lo = m_lo == -FLT_MAX ? 0.0f : exp2f(m_lo - gm_lo);
  const float s_hi = m_hi == -FLT_MAX ? 0.0f : exp2f(m_hi - gm_hi);
  for (int i = tid; i < 16 * D; i += kThreads) o_s[i] = 0.0f;
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
        const int slot = n * 8 + 2 * t4;
        o_s[g * D + slot] += o[n][0] * s_lo;
        o_s[g * D + slot + 1] += o[n][1] * s_lo;
        o_s[(g + 8) * D + slot] += o[n][2] * s_hi;
        o_s[(g + 8) * D + slot + 1] += o[n][3] * s_hi;
      }
    }
    __syncthreads();
  }
  // Rows 0..group-1 are the group's heads; each output thread recomputes its row's max and sum.
  for (int i = tid; i < group * D; i += kThreads) {
    const int r = i / D, slot = i % D, d = dim_of(slot / 8, slot % 8);
    float mm = -FLT_MAX, ll = 0.0f;
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, merge_ml[w][r][0]);
    for (int w = 0; w < kWarps; ++w) {
      if (merge_ml[w][r][0] != -FLT_MAX) ll += merge_ml[w][r][1] * exp2f(merge_ml[w][r][0] - mm);
    }
    const int h = kvh * group + r;
    const float a = o_s[r * D + slot];
    if (p.num_splits == 1) {
      p.out[static_cast<int64_t>(tok) * p.out_stride + h * D + d] = __float2bfloat16(a / ll);
    } else {
      const int64_t idx = (static_cast<int64_t>(split) * p.num_tokens + tok) * p.q_heads + h;
      p.partial_out[idx * D + d] = a;
      if (d == 0) {
        p.partial_ml[idx * 2] = mm;
        p.partial_ml[idx * 2 + 1] = ll;
      }
    }
  }
}

}  // namespace attention
}  // namespace kvs::cuda
