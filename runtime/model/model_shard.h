// Which part of a model one tensor-parallel rank holds, as plain data (computed by
// parallel/sharding_plan; the whole model when tp = 1).
//
// Query heads are owned in a contiguous range; the rank holds every KV head those query heads
// read. When the owned range does not start or end on a GQA group boundary (9 query heads over
// 2 ranks), the rank still computes attention for whole groups — the "computed" query heads
// [kv.begin * group, kv.end * group) — so the attention kernels see a plain GQA layout, and
// only the owned heads' outputs enter the row-parallel O projection. The waste is at most one
// partial group per end of the range.
#pragma once

#include <cstdint>

#include "runtime/model/model_config.h"

namespace kvs {

// Half-open range [begin, end).
struct Range {
  int32_t begin = 0;
  int32_t end = 0;
  int32_t size() const { return end - begin; }
  friend bool operator==(Range a, Range b) { return a.begin == b.begin && a.end == b.end; }
};

struct ModelShard {
  Range q_heads;       // query heads owned (O-projection input columns)
  Range kv_heads;      // KV heads held (their pages live on this rank)
  Range intermediate;  // gate/up rows, down-projection input columns
  Range vocab;         // embedding / LM-head rows

  static ModelShard Whole(const ModelConfig& c) {
    return ModelShard{{0, c.num_q_heads}, {0, c.num_kv_heads}, {0, c.intermediate_size}, {0, c.vocab_size}};
  }
  int32_t Group(const ModelConfig& c) const { return c.num_q_heads / c.num_kv_heads; }
  // Query heads whose attention this rank computes: whole groups of its KV heads.
  Range ComputedQHeads(const ModelConfig& c) const {
    return Range{kv_heads.begin * Group(c), kv_heads.end * Group(c)};
  }
  // The model as this rank's kernels see it: its computed query heads, its KV heads and its
  // FFN rows (vocab stays whole: token ids are global).
  ModelConfig LocalConfig(const ModelConfig& c) const {
    ModelConfig local = c;
    local.num_q_heads = ComputedQHeads(c).size();
    local.num_kv_heads = kv_heads.size();
    local.intermediate_size = intermediate.size();
    return local;
  }
};

}  // namespace kvs
