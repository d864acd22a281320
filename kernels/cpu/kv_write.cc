#include <algorithm>
#include <vector>

#include "kernels/common/status_macros.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/kv_codec.h"

namespace kvs::cpu {

void WriteKvF32(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                int64_t num_tokens, const int32_t* slot_mapping, const PagedKvView& cache) {
  auto* kc = static_cast<std::byte*>(cache.k);
  auto* vc = static_cast<std::byte*>(cache.v);
  const int32_t dim = cache.head_dim;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot == -1) continue;
    if (slot <= -2) {  // the sequence's residual ring (channel-quantized caches)
      const int64_t r = -(slot + 2);
      KVS_CHECK_MSG(cache.k_residual != nullptr &&
                        r < static_cast<int64_t>(cache.num_residual) * cache.residual_blocks * cache.block_size,
                    "residual KV slot outside the residual rings");
      for (int32_t h = 0; h < cache.kv_heads; ++h) {
        // Residual rows are bf16 rows, as a bf16 cache stores them.
        EncodeKvRow(k + t * k_stride + h * dim, KvDType::kBF16, dim,
                    static_cast<std::byte*>(cache.k_residual) + cache.ResidualRowOffset(r, h), nullptr);
        EncodeKvRow(v + t * v_stride + h * dim, KvDType::kBF16, dim,
                    static_cast<std::byte*>(cache.v_residual) + cache.ResidualRowOffset(r, h), nullptr);
      }
      continue;
    }
    KVS_CHECK_MSG(slot < cache.NumSlots(), "KV slot outside the cache");
    KVS_CHECK_MSG(!KvChannelQuantized(cache.dtype), "a channel-quantized block is written whole (SealKvGroups)");
    for (int32_t h = 0; h < cache.kv_heads; ++h) {
      const int64_t row = cache.RowOffset(slot, h), scales = cache.ScaleOffset(slot, h);
      EncodeKvRow(k + t * k_stride + h * dim, cache.dtype, dim, kc + row, kc + scales);
      EncodeKvRow(v + t * v_stride + h * dim, cache.dtype, dim, vc + row, vc + scales);
    }
  }
}

void SealKvGroupsF32(const float* k, int64_t k_stride, const float* v, int64_t v_stride, const AttentionBatch& batch,
                     const PagedKvView& cache) {
  const int32_t bs = cache.block_size, dim = cache.head_dim;
  const KvResidualRing ring = cache.ring();
  auto* kc = static_cast<std::byte*>(cache.k);
  auto* vc = static_cast<std::byte*>(cache.v);
  std::vector<float> residual_k(static_cast<size_t>(bs) * dim), residual_v(residual_k.size());
  std::vector<const float*> key_rows(bs), value_rows(bs);
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const int32_t begin = batch.query_start[s], n = batch.query_start[s + 1] - begin;
    const int32_t end_pos = batch.context_len[s], first_pos = end_pos - n;
    const int32_t* blocks = batch.block_table + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
    // The blocks this step seals: from where the sequence's sealed positions end to where the
    // ring lets go of its older tokens (with a one-block ring, the blocks this step completes).
    KVS_CHECK_MSG(batch.sealed != nullptr, "a channel-quantized step needs each sequence's sealed positions");
    const int32_t from = batch.sealed[s], to = std::max(from, ring.SealedEnd(end_pos));
    // At most the first query's position, but for a sink refill (AttentionBatch::sealed).
    const bool refill = first_pos == 0 && end_pos == bs && from == bs;
    KVS_CHECK_MSG(from % bs == 0 && from >= ring.SealedEnd(first_pos) && (from <= first_pos || refill),
                  "a sequence's sealed positions disagree with its ring");
    for (int32_t j = from / bs; j < to / bs; ++j) {
      const int64_t block = blocks[j];
      KVS_CHECK_MSG(block >= 0 && block < cache.num_blocks, "block table entry outside the cache");
      for (int32_t h = 0; h < cache.kv_heads; ++h) {
        for (int32_t i = 0; i < bs; ++i) {
          const int32_t pos = j * bs + i;
          if (pos >= first_pos) {  // this step's row
            const int64_t t = begin + pos - first_pos;
            key_rows[i] = k + t * k_stride + h * dim;
            value_rows[i] = v + t * v_stride + h * dim;
            continue;
          }
          // An earlier token of the block: in the sequence's residual ring.
          KVS_CHECK_MSG(batch.residual != nullptr && batch.residual[s] >= 0 && batch.residual[s] < cache.num_residual,
                        "a block completed across steps needs the sequence's residual block");
          const int64_t r = ring.Slot(batch.residual[s], pos);
          float* rk = residual_k.data() + static_cast<size_t>(i) * dim;
          float* rv = residual_v.data() + static_cast<size_t>(i) * dim;
          DecodeKvRow(static_cast<const std::byte*>(cache.k_residual) + cache.ResidualRowOffset(r, h), nullptr,
                      KvDType::kBF16, dim, rk);
          DecodeKvRow(static_cast<const std::byte*>(cache.v_residual) + cache.ResidualRowOffset(r, h), nullptr,
                      KvDType::kBF16, dim, rv);
          key_rows[i] = rk;
          value_rows[i] = rv;
        }
        const int64_t first_slot = block * bs;
        EncodeKeyBlock(key_rows.data(), bs, cache.dtype, dim, kc + cache.RowOffset(first_slot, h),
                       static_cast<int64_t>(cache.kv_heads) * cache.RowBytes(), kc + cache.ChannelScaleOffset(block, h));
        for (int32_t i = 0; i < bs; ++i) {
          EncodeKvRow(value_rows[i], cache.dtype, dim, vc + cache.RowOffset(first_slot + i, h),
                      vc + cache.ScaleOffset(first_slot + i, h));
        }
      }
    }
  }
}

}  // namespace kvs::cpu
