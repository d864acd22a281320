// An AttentionBatch over host vectors, as the attention tests build them (kernels/common/paged_kv.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/common/paged_kv.h"

namespace kvs::testing {

// query_start [S + 1], context_len [S], block_table [S * max_blocks]; query_lens for the launch
// sizing. The vectors must outlive the batch.
inline AttentionBatch HostAttentionBatch(const std::vector<int32_t>& query_start, const std::vector<int32_t>& context_len,
                                         const std::vector<int32_t>& block_table, int32_t max_blocks,
                                         const std::vector<int32_t>& query_lens) {
  AttentionBatch batch;
  batch.num_seqs = static_cast<int32_t>(context_len.size());
  batch.num_tokens = query_start.back();
  batch.max_blocks_per_seq = max_blocks;
  batch.max_context_len = *std::max_element(context_len.begin(), context_len.end());
  batch.max_query_len = *std::max_element(query_lens.begin(), query_lens.end());
  batch.query_start = query_start.data();
  batch.context_len = context_len.data();
  batch.block_table = block_table.data();
  return batch;
}

}  // namespace kvs::testing
