#include "runtime/kv/kv_cache.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

size_t KvCache::BytesPerBlock(const ModelConfig& c, KvDType dtype, int32_t block_size) {
  return 2 * static_cast<size_t>(c.num_layers) * KvBlockBytes(dtype, block_size, c.num_kv_heads, c.head_dim);
}

int32_t KvCache::BlocksForBudget(const ModelConfig& c, KvDType dtype, int32_t block_size, size_t budget_bytes) {
  const size_t blocks = budget_bytes / BytesPerBlock(c, dtype, block_size);
  return static_cast<int32_t>(std::min<size_t>(blocks, 1u << 30));
}

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, const ModelConfig& c, KvDType dtype, int32_t block_size,
                                        int32_t num_blocks, int32_t num_offload_blocks) {
  if (block_size <= 0 || block_size > 1024) {
    return absl::InvalidArgumentError(absl::StrFormat("block size %d must be in 1..1024", block_size));
  }
  if (num_blocks <= 0) {
    return absl::ResourceExhaustedError("no memory is left for the KV cache after the weights");
  }
  if (num_offload_blocks < 0 || static_cast<int64_t>(num_blocks) + num_offload_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat("%d offload blocks is out of range", num_offload_blocks));
  }
  if (const char* problem = KvDTypeHeadDimProblem(dtype, c.head_dim)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--kv-dtype %s cannot store this model's heads (head_dim %d): %s", KvDTypeName(dtype), c.head_dim, problem));
  }
  if (!backend.SupportsKvDType(dtype, c.head_dim)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--kv-dtype %s with head_dim %d is not supported by the %s backend (CUDA: bf16, or fp16/fp8/int8/int4 at "
        "head_dim 64 or 128; CPU: every format)", KvDTypeName(dtype), c.head_dim, backend.Name()));
  }
  KvCache kv;
  kv.dtype_ = dtype;
  kv.num_blocks_ = num_blocks;
  kv.num_offload_blocks_ = num_offload_blocks;
  kv.block_size_ = block_size;
  kv.kv_heads_ = c.num_kv_heads;
  kv.head_dim_ = c.head_dim;
  const size_t per_layer = static_cast<size_t>(num_blocks) * kv.BlockBytes();
  const size_t offload_per_layer = static_cast<size_t>(num_offload_blocks) * kv.BlockBytes();
  for (int32_t l = 0; l < c.num_layers; ++l) {
    KVS_ASSIGN_OR_RETURN(DeviceBuffer k, backend.AllocateWithHostTail(per_layer, offload_per_layer));
    KVS_ASSIGN_OR_RETURN(DeviceBuffer v, backend.AllocateWithHostTail(per_layer, offload_per_layer));
    kv.k_.push_back(std::move(k));
    kv.v_.push_back(std::move(v));
    kv.bytes_ += 2 * per_layer;
  }
  return kv;
}

absl::Status KvCache::AddHostTier(Backend& backend, int32_t num_host_blocks) {
  if (num_host_blocks < 0) return absl::InvalidArgumentError("host block count must be >= 0");
  if (num_host_blocks == 0) return absl::OkStatus();
  const size_t bytes = static_cast<size_t>(num_host_blocks) * bytes_per_block();
  KVS_ASSIGN_OR_RETURN(host_, backend.AllocateHost(bytes));
  num_host_blocks_ = num_host_blocks;
  return absl::OkStatus();
}

std::byte* KvCache::HostBlock(int32_t layer, int kv, int32_t block) const {
  return host_.get() + ((static_cast<size_t>(layer) * 2 + kv) * num_host_blocks_ + block) * BlockBytes();
}

absl::Status KvCache::CheckPairs(std::span<const int32_t> pairs, bool out) const {
  if (pairs.size() % 2 != 0) return absl::InvalidArgumentError("swap list must hold pairs");
  for (size_t i = 0; i < pairs.size(); i += 2) {
    const int32_t device = pairs[out ? i : i + 1], host = pairs[out ? i + 1 : i];
    if (device < 0 || device >= num_addressable_blocks() || host < 0 || host >= num_host_blocks_) {
      return absl::OutOfRangeError(absl::StrFormat("swap of device block %d / host block %d is outside the cache (%d / %d)",
                                                   device, host, num_addressable_blocks(), num_host_blocks_));
    }
  }
  return absl::OkStatus();
}

// Swaps and copies move one piece per (block, layer, K or V): all of a step's pieces go to the
// backend as one CopyRegions batch.
absl::Status KvCache::SwapOut(Backend& backend, std::span<const int32_t> pairs) const {
  KVS_RETURN_IF_ERROR(CheckPairs(pairs, true));
  const size_t bb = BlockBytes();
  std::vector<CopyRegion> regions;
  regions.reserve(pairs.size() * k_.size());
  for (size_t i = 0; i < pairs.size(); i += 2) {
    for (size_t l = 0; l < k_.size(); ++l) {
      const auto* k = static_cast<const std::byte*>(k_[l].data()) + static_cast<size_t>(pairs[i]) * bb;
      const auto* v = static_cast<const std::byte*>(v_[l].data()) + static_cast<size_t>(pairs[i]) * bb;
      regions.push_back({k, HostBlock(l, 0, pairs[i + 1]), bb});
      regions.push_back({v, HostBlock(l, 1, pairs[i + 1]), bb});
    }
  }
  return backend.CopyRegions(regions);
}

absl::Status KvCache::SwapIn(Backend& backend, std::span<const int32_t> pairs) const {
  KVS_RETURN_IF_ERROR(CheckPairs(pairs, false));
  const size_t bb = BlockBytes();
  std::vector<CopyRegion> regions;
  regions.reserve(pairs.size() * k_.size());
  for (size_t i = 0; i < pairs.size(); i += 2) {
    for (size_t l = 0; l < k_.size(); ++l) {
      auto* k = static_cast<std::byte*>(k_[l].data()) + static_cast<size_t>(pairs[i + 1]) * bb;
      auto* v = static_cast<std::byte*>(v_[l].data()) + static_cast<size_t>(pairs[i + 1]) * bb;
      regions.push_back({HostBlock(l, 0, pairs[i]), k, bb});
      regions.push_back({HostBlock(l, 1, pairs[i]), v, bb});
    }
  }
  return backend.CopyRegions(regions);
}

absl::Status KvCache::CopyBlocks(Backend& backend, std::span<const int32_t> pairs) const {
  if (pairs.size() % 2 != 0) return absl::InvalidArgumentError("copy list must hold pairs");
  const int32_t n = num_addressable_blocks();
  for (size_t i = 0; i < pairs.size(); i += 2) {  // all checked before anything moves
    if (pairs[i] < 0 || pairs[i] >= n || pairs[i + 1] < 0 || pairs[i + 1] >= n) {
      return absl::OutOfRangeError(absl::StrFormat("copy of block %d to %d is outside the cache", pairs[i], pairs[i + 1]));
    }
  }
  const size_t bb = BlockBytes();
  std::vector<CopyRegion> regions;
  // The pieces of one batch move in parallel, so a copy into a block that an earlier copy of the
  // list reads (or writes) starts a new batch: the list's order is kept.
  absl::flat_hash_set<int32_t> read, written;
  for (size_t i = 0; i < pairs.size(); i += 2) {
    if (read.contains(pairs[i + 1]) || written.contains(pairs[i + 1]) || written.contains(pairs[i])) {
      KVS_RETURN_IF_ERROR(backend.CopyRegions(regions));
      regions.clear();
      read.clear();
      written.clear();
    }
    read.insert(pairs[i]);
    written.insert(pairs[i + 1]);
    for (size_t l = 0; l < k_.size(); ++l) {
      for (const DeviceBuffer* buf : {&k_[l], &v_[l]}) {
        auto* base = static_cast<std::byte*>(buf->data());
        regions.push_back({base + static_cast<size_t>(pairs[i]) * bb, base + static_cast<size_t>(pairs[i + 1]) * bb, bb});
      }
    }
  }
  return backend.CopyRegions(regions);
}

PagedKvView KvCache::Layer(int32_t layer) const {
  KVS_CHECK(layer >= 0 && layer < static_cast<int32_t>(k_.size()));
  return PagedKvView{k_[layer].data(), v_[layer].data(), dtype_, num_addressable_blocks(), block_size_, kv_heads_,
                     head_dim_};
}

}  // namespace kvs
