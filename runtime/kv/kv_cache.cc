#include "runtime/kv/kv_cache.h"

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

int32_t KvCache::BlocksForBudget(const ModelConfig& c, DType dtype, int32_t block_size, size_t budget_bytes) {
  const size_t per_block = static_cast<size_t>(c.KvBytesPerToken(static_cast<int>(DTypeSize(dtype)))) * block_size;
  const size_t blocks = budget_bytes / per_block;
  return static_cast<int32_t>(std::min<size_t>(blocks, 1u << 30));
}

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const ModelConfig& c, int32_t block_size,
                                        int32_t num_blocks) {
  if (block_size <= 0 || block_size > 1024) {
    return absl::InvalidArgumentError(absl::StrFormat("block size %d must be in 1..1024", block_size));
  }
  if (num_blocks <= 0) {
    return absl::ResourceExhaustedError("no memory is left for the KV cache after the weights");
  }
  KvCache kv;
  kv.dtype_ = backend.ComputeDType();
  kv.num_blocks_ = num_blocks;
  kv.block_size_ = block_size;
  kv.kv_heads_ = c.num_kv_heads;
  kv.head_dim_ = c.head_dim;
  const size_t per_layer = static_cast<size_t>(num_blocks) * block_size * c.num_kv_heads * c.head_dim * DTypeSize(kv.dtype_);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    KVS_ASSIGN_OR_RETURN(DeviceBuffer k, backend.Allocate(per_layer));
    KVS_ASSIGN_OR_RETURN(DeviceBuffer v, backend.Allocate(per_layer));
    kv.k_.push_back(std::move(k));
    kv.v_.push_back(std::move(v));
    kv.bytes_ += 2 * per_layer;
  }
  return kv;
}

PagedKvView KvCache::Layer(int32_t layer) const {
  KVS_CHECK(layer >= 0 && layer < static_cast<int32_t>(k_.size()));
  return PagedKvView{k_[layer].data(), v_[layer].data(), dtype_, num_blocks_, block_size_, kv_heads_, head_dim_};
}

}  // namespace kvs
