// The device memory of a paged KV cache: for every layer, one K and one V buffer of
// [num_blocks, block_size, kv_heads, head_dim] elements (layout in kernels/common/paged_kv.h).
// Sized once at start-up; never grows.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/model_config.h"

namespace kvs {

class KvCache {
 public:
  // Blocks that fit in `budget_bytes` for this model at the backend's compute dtype.
  static int32_t BlocksForBudget(const ModelConfig& c, DType dtype, int32_t block_size, size_t budget_bytes);
  static absl::StatusOr<KvCache> Create(Backend& backend, const ModelConfig& c, int32_t block_size,
                                        int32_t num_blocks);

  PagedKvView Layer(int32_t layer) const;
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  size_t bytes() const { return bytes_; }

 private:
  std::vector<DeviceBuffer> k_, v_;
  DType dtype_ = DType::kF32;
  int32_t num_blocks_ = 0, block_size_ = 0, kv_heads_ = 0, head_dim_ = 0;
  size_t bytes_ = 0;
};

}  // namespace kvs
