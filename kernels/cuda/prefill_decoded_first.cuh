// Prefill over an fp8/int8/int4-token cache with the keys and values decoded first: one kernel
// writes every position the step attends to as fp16 into pages of the attention workspace's
// kv_scratch (a block table of its own: sequence s's block i is scratch block s * nb + i), then
// the Hopper kernel runs its fp16 instantiation over them. The values are the ones the
// kernel's producer warps would have decoded (CodesToHalf8), so the results are the same; what
// changes is the time: the producer warps decoding in the kernel held fp8/int8 at 0.64x of
// bf16's rate at 16K (latency-bound, docs/performance.md), while decoding a 16K context first
// reads and writes ~100 MB (~30 us beside ~4.5 ms of attention). A step that is mostly decode
// rows would decode whole contexts for one query each, so kAuto keeps those in the kernel.
#pragma once

#include "kernels/cuda/paged_attention_common.cuh"
#include "kernels/cuda/paged_prefill_wgmma.cuh"
#include "kernels/cuda/pdl.cuh"

namespace kvs::cuda::attention {

// The scratch's shape for a step: fp16 pages of the cache's block size, nb per sequence; K's pages,
// then V's, then their block table.
struct DecodedFirstLayout {
  int32_t blocks_per_seq = 0;
  int64_t block_bytes = 0;  // one fp16 block of K (or V)
  int64_t Bytes(int32_t num_seqs) const {
    const int64_t blocks = static_cast<int64_t>(num_seqs) * blocks_per_seq;
    return 2 * blocks * block_bytes + blocks * static_cast<int64_t>(sizeof(int32_t));
  }
  struct Pages {
    unsigned char* k;
    unsigned char* v;
    int32_t* table;
  };
  Pages Carve(void* scratch, int32_t num_seqs) const {
    const int64_t blocks = static_cast<int64_t>(num_seqs) * blocks_per_seq;
    auto* k = static_cast<unsigned char*>(scratch);
    return Pages{k, k + blocks * block_bytes, reinterpret_cast<int32_t*>(k + 2 * blocks * block_bytes)};
  }
  // Byte offset of 8-element chunk `chunk` of (token `key` of scratch block `block`, head kvh).
  __device__ int64_t ChunkOffset(int64_t block, int32_t key, int32_t kv_heads, int32_t kvh, int32_t head_dim,
                                 int32_t chunk) const {
    return block * block_bytes + (static_cast<int64_t>(key) * kv_heads + kvh) * head_dim * 2 + chunk * 16;
  }
};

inline DecodedFirstLayout DecodedFirstLayoutFor(int32_t block_size, int32_t kv_heads, int32_t head_dim,
                                                int64_t max_context) {
  DecodedFirstLayout l;
  l.blocks_per_seq = static_cast<int32_t>((max_context + block_size - 1) / block_size);
  l.block_bytes = KvBlockBytes(KvDType::kF16, block_size, kv_heads, head_dim);
  return l;
}

// Block (i, s): sequence s's logical block i, every KV head, K and V. A thread decodes one
// 8-element chunk of a row at a time (consecutive threads on consecutive chunks of a row), kBatch
// (4) chunks at once: their codes and scales are all loaded before the first is decoded and stored,
// so kBatch x 4 loads are in flight a thread (kBatch 4 against 1: fp8 KV at 4K 0.962-0.966x of
// bf16's rate against 0.945-0.949x, H100, docs/performance.md). Launched with
// programmatic dependent launch: it waits for the KV write before reading the cache, and for the
// previous layer's attention before rewriting the scratch that one read.
template <KvDType F, int D>
__global__ void __launch_bounds__(256)
    DecodeKvToScratchKernel(Params p, DecodedFirstLayout l, DecodedFirstLayout::Pages out) {
  pdl::StartAfterPrevious();
  constexpr int kBatch = 4;
  constexpr int kChunks = D / 8;
  const int i = blockIdx.x, seq = blockIdx.y;
  const int64_t out_block = static_cast<int64_t>(seq) * l.blocks_per_seq + i;
  if (threadIdx.x == 0) out.table[out_block] = static_cast<int32_t>(out_block);
  const int ctx = p.context_len[seq];
  const int first = i * p.block_size;
  if (first >= ctx) return;
  const int keys = min(p.block_size, ctx - first);
  const int32_t block = p.block_table[static_cast<int64_t>(seq) * p.max_blocks_per_seq + i];
  const int items = keys * p.kv_heads * kChunks;
  // A chunk's codes (8 of fp8 / int8 in two words, or 8 of int4 in one) and its scale word.
  struct Codes {
    uint32_t w[2];
    uint32_t scale;
  };
  auto load = [&](const unsigned char* cache, const KvRow& r, int c) {
    Codes x{};
    if constexpr (F == KvDType::kINT4) {
      x.w[0] = __ldg(reinterpret_cast<const uint32_t*>(cache + r.codes + c * 4));
      x.scale = __ldg(reinterpret_cast<const uint32_t*>(cache + r.scales + (c * 8 / kKvInt4Group) * 4));
    } else {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(cache + r.codes + c * 8));
      x.w[0] = u.x, x.w[1] = u.y;
      x.scale = __ldg(reinterpret_cast<const uint32_t*>(cache + r.scales));
    }
    return x;
  };
  auto store = [&](const Codes& x, unsigned char* dst) {
    uint32_t h[4];
    CodesToHalf8<F, false>(x.w, x.scale, h);
    *reinterpret_cast<uint4*>(dst) = make_uint4(h[0], h[1], h[2], h[3]);
  };
  for (int it0 = threadIdx.x; it0 < items; it0 += kBatch * blockDim.x) {
    Codes k[kBatch], v[kBatch];
    int64_t dst[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int it = it0 + b * static_cast<int>(blockDim.x);
      if (it < items) {
        const int c = it % kChunks, kvh = (it / kChunks) % p.kv_heads, key = it / kChunks / p.kv_heads;
        const KvRow r = LocateKvIn(p, block, first + key, kvh);
        dst[b] = l.ChunkOffset(out_block, key, p.kv_heads, kvh, D, c);
        k[b] = load(p.k_cache, r, c);
        v[b] = load(p.v_cache, r, c);
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (it0 + b * static_cast<int>(blockDim.x) < items) {
        store(k[b], out.k + dst[b]);
        store(v[b], out.v + dst[b]);
      }
    }
  }
}

// Whether this step decodes first (kAuto's rule: mostly prompt rows, and the pages fit). A step
// told to decode first (kDecodedFirst) whose pages do not fit the scratch is an error
// (cudaErrorMemoryAllocation), so that a test or benchmark never measures the other path unawares.
inline cudaError_t DecodeFirst(const Params& p, int num_seqs, int head_dim, bool* decode_first) {
  *decode_first = false;
  const QuantizedPrefillLoads mode = GetQuantizedPrefillLoads();
  if (mode != QuantizedPrefillLoads::kAuto && mode != QuantizedPrefillLoads::kDecodedFirst) return cudaSuccess;
  const DecodedFirstLayout l = DecodedFirstLayoutFor(p.block_size, p.kv_heads, head_dim, p.max_context_len);
  const bool fits = p.kv_scratch != nullptr && l.Bytes(num_seqs) <= p.kv_scratch_bytes;
  if (mode == QuantizedPrefillLoads::kDecodedFirst) {
    *decode_first = fits;
    return fits ? cudaSuccess : cudaErrorMemoryAllocation;
  }
  *decode_first = fits && p.num_tokens >= static_cast<int64_t>(kDecodeFirstMinQueries) * num_seqs;
  return cudaSuccess;
}

}  // namespace kvs::cuda::attention
