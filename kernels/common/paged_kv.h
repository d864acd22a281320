// Plain-data description of one layer's paged KV cache, shared by g++ and nvcc code.
//
// Layout (per layer, K and V separately): num_blocks blocks of KvBlockBytes each, every block
//   codes[block_size][kv_heads][row bytes], then scales[block_size][kv_heads][scale bytes]
// (kernels/common/kv_format.h). A token's slot is `block_id * block_size + offset_in_block`. For
// the unquantized formats this is cache[slot][kv_head][d] with no scales. Block 0 is an ordinary
// block: "no block" is never encoded in the cache itself but in the block table lengths.
#pragma once

#include <cstdint>

#include "kernels/common/host_device.h"
#include "kernels/common/kv_format.h"

namespace kvs {

// Where channel-quantized KV (kv_format.h: int4 / int2) keeps a running sequence's newest tokens:
// in bf16, in a ring of `blocks` residual blocks per layer group of its own, until they are older
// than its (blocks - 1) * block_size newest tokens; then their block is quantized whole ("sealed")
// into the paged cache. blocks = 1 seals a block as soon as it is whole; KIVI keeps the newest 128
// tokens in full precision (blocks = 128 / block_size + 1). A sequence that resumed from sealed
// blocks alone (a prefix-cache hit, a swap-in, a fork) has sealed positions past SealedEnd, so the
// step says where each sequence's sealed positions end (AttentionBatch::sealed).
//
// With `sink`, the ring's last block keeps the sequence's first block (positions [0, block_size))
// in bf16 for good, beside its sealed copy: the first tokens draw most of the attention (the
// "attention sink") and their keys the largest channel ranges, which 2-bit keys cannot hold
// (docs/performance.md). A sequence holds them (AttentionBatch::sink) once it computed those
// positions itself, or, resumed from sealed blocks (prefix hit, swap-in, fork), once a refill step
// recomputed them into its sink (Scheduler::EmitSinkRefill); until then it reads its sealed first
// block.
struct KvResidualRing {
  int32_t block_size = 1;
  int32_t blocks = 1;  // ring blocks per sequence and layer group, the sink's included
  bool sink = false;

  KVS_HOST_DEVICE int32_t rotating() const { return blocks - (sink ? 1 : 0); }
  KVS_HOST_DEVICE bool InSink(int32_t pos) const { return sink && pos < block_size; }
  // Whether a reader takes position `pos` from the ring: past the sequence's sealed positions
  // (sealed_end), or in the sink where the sequence holds it.
  KVS_HOST_DEVICE bool Reads(int32_t pos, int32_t sealed_end, bool holds_sink) const {
    return pos >= sealed_end || (holds_sink && InSink(pos));
  }
  // The positions of a sequence of n tokens that the ring no longer needs to hold: its sealed
  // blocks' (a multiple of block_size).
  KVS_HOST_DEVICE int32_t SealedEnd(int32_t n) const {
    const int32_t kept = (rotating() - 1) * block_size;
    return n <= kept ? 0 : (n - kept) / block_size * block_size;
  }
  // Residual slot (ring block * block_size + row, over every ring) of position `pos` in ring `ring`
  // (KvCache: ring r * G + g is sequence residual r's in layer group g).
  KVS_HOST_DEVICE int64_t Slot(int64_t ring, int32_t pos) const {
    const int32_t block = InSink(pos) ? blocks - 1 : (pos / block_size) % rotating();
    return (ring * blocks + block) * block_size + pos % block_size;
  }
};

struct PagedKvView {
  void* k = nullptr;              // num_blocks * BlockBytes() bytes
  void* v = nullptr;              // same layout as k
  KvDType dtype = KvDType::kF32;  // element format of k and v
  int32_t num_blocks = 0;
  int32_t block_size = 0;  // tokens per block
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  // Sliding-window layers (Gemma 3): the query at position p attends to keys p - window + 1 .. p.
  // 0: every earlier key.
  int32_t window = 0;
  // Channel-quantized formats (kv_format.h): each sequence's newest tokens, in bf16, in a ring of
  // residual blocks of its own (KvResidualRing): [num_residual * residual_blocks][block_size]
  // [kv_heads][head_dim]. A KV slot s <= -2 names residual slot -(s + 2) (slot -1: write nothing).
  void* k_residual = nullptr;
  void* v_residual = nullptr;
  int32_t num_residual = 0;     // rings
  int32_t residual_blocks = 1;  // blocks per ring, the sink's included
  bool residual_sink = false;   // the ring's last block is the sink (KvResidualRing)

  KVS_HOST_DEVICE KvResidualRing ring() const { return KvResidualRing{block_size, residual_blocks, residual_sink}; }

  // Elements of one token over all KV heads (the width of the k/v rows WriteKv takes).
  int64_t SlotStride() const { return static_cast<int64_t>(kv_heads) * head_dim; }
  int64_t NumSlots() const { return static_cast<int64_t>(num_blocks) * block_size; }
  KVS_HOST_DEVICE int64_t RowBytes() const { return KvRowBytes(dtype, head_dim); }
  KVS_HOST_DEVICE int64_t ScaleBytes() const { return KvScaleBytes(dtype, head_dim); }
  KVS_HOST_DEVICE int64_t BlockBytes() const { return KvBlockBytes(dtype, block_size, kv_heads, head_dim); }
  int64_t Bytes() const { return num_blocks * BlockBytes(); }
  // Byte offsets, within k or v, of (slot, head)'s codes and of its scales.
  KVS_HOST_DEVICE int64_t RowOffset(int64_t slot, int32_t head) const {
    return slot / block_size * BlockBytes() + ((slot % block_size) * kv_heads + head) * RowBytes();
  }
  KVS_HOST_DEVICE int64_t ScaleOffset(int64_t slot, int32_t head) const {
    return slot / block_size * BlockBytes() + static_cast<int64_t>(block_size) * kv_heads * RowBytes() +
           ((slot % block_size) * kv_heads + head) * ScaleBytes();
  }
  // Channel-quantized keys: block `block`'s (scale, zero) fp16 pairs of head `head`, one per channel.
  KVS_HOST_DEVICE int64_t ChannelScaleOffset(int64_t block, int32_t head) const {
    return block * BlockBytes() + static_cast<int64_t>(block_size) * kv_heads * RowBytes() +
           static_cast<int64_t>(head) * head_dim * 4;
  }
  // Residual slot `r` (a residual block's row: block r / block_size, token r % block_size), head `head`:
  // byte offset of its bf16 row in k_residual / v_residual.
  KVS_HOST_DEVICE int64_t ResidualRowOffset(int64_t r, int32_t head) const {
    return (r * kv_heads + head) * static_cast<int64_t>(head_dim) * 2;
  }
};

// One step's attention work over a ragged batch of sequences. All arrays live in backend
// memory. Sequence s owns query rows [query_start[s], query_start[s+1]) of q; those queries are
// the last (query_start[s+1]-query_start[s]) tokens of its context of context_len[s] tokens, so
// query row i of sequence s sits at position context_len[s] - num_queries(s) + i and attends
// causally to keys 0..that position. Keys of sequence s live in blocks
// block_table[s * max_blocks_per_seq + j], j < ceil(context_len[s] / block_size).
struct AttentionBatch {
  int32_t num_seqs = 0;
  int32_t num_tokens = 0;            // == query_start[num_seqs]
  int32_t max_blocks_per_seq = 0;    // row stride of block_table
  int32_t max_context_len = 0;       // max over context_len, for launch sizing (host value)
  int32_t max_query_len = 0;         // max queries of one sequence, for launch sizing (host value)
  const int32_t* query_start = nullptr;  // [num_seqs + 1]
  const int32_t* context_len = nullptr;  // [num_seqs]
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks_per_seq]
  // Channel-quantized caches: each sequence's residual ring (PagedKvView::ring(): its keys and
  // values from the end of its sealed blocks on), and where its sealed positions ended before
  // this step (a multiple of block_size, at most its first query's position — except a sink
  // refill's entry, which computes positions [0, block_size) again into the sink: block_size, so
  // that nothing is sealed); nullptr otherwise. Positions below
  // max(sealed[s], ring.SealedEnd(context_len[s])) are in blocks, the others in the ring.
  // Rings with a sink: 1 where the sequence's ring holds its first block (it computed those
  // positions since it took the ring), which is then read from the ring; nullptr: none does.
  const int32_t* residual = nullptr;     // [num_seqs]
  const int32_t* sealed = nullptr;       // [num_seqs]
  const int32_t* sink = nullptr;         // [num_seqs]
};

}  // namespace kvs
