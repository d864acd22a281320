// Tensor maps (the descriptors Hopper's tensor memory accelerator copies by) over one layer's
// paged K or V pool, so that the Hopper prefill kernel can load a 16-key piece of a page for one
// KV head with one instruction instead of 16-byte cp.async copies from every producer thread.
// Encoded on the host through the driver's cuTensorMapEncodeTiled, reached through the runtime
// (cudaGetDriverEntryPointByVersion), so nothing links libcuda.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace kvs::cuda {

// Keys (rows of one KV head within one page) a tensor copy loads: pages must hold a multiple.
inline constexpr int kKvTensorBoxKeys = 16;
// Elements a tensor copy loads along head_dim: one 128-byte row of the kernel's swizzled sub-tile.
inline constexpr int kKvTensorBoxElems = 64;

// K's and V's maps, passed by value to the kernel (as a __grid_constant__ parameter).
struct KvTensorMaps {
  CUtensorMap k;
  CUtensorMap v;
};

// The pool's geometry: num_blocks pages of block_bytes each, a page [block_size][kv_heads][head_dim]
// of 2-byte elements (bf16 or fp16), a (token, head) row row_bytes long.
struct KvPoolShape {
  int32_t head_dim = 0;
  int32_t kv_heads = 0;
  int32_t block_size = 0;
  int64_t num_blocks = 0;
  int64_t row_bytes = 0;
  int64_t block_bytes = 0;
};

// Encodes `map` for boxes of kKvTensorBoxElems x 1 head x kKvTensorBoxKeys keys x 1 page with the
// 128-byte swizzle; the coordinates are (element, head, slot in page, page). False, and the
// caller keeps its cp.async loads, where the shape does not allow it (pages not a multiple of
// kKvTensorBoxKeys, misaligned pool or rows) or the driver cannot encode it.
bool EncodeKvTensorMap(const void* pool, const KvPoolShape& shape, CUtensorMap* map);

}  // namespace kvs::cuda
