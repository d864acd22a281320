// The device memory of a paged KV cache: for every slab slot (kv_groups.h: all layers for a model
// without sliding windows), one K and one V buffer of num_blocks blocks in the cache's KvDType
// (layout in kernels/common/kv_format.h and paged_kv.h); layer l reads and writes slot
// groups().slot_of(l) of the blocks its group's block table names. Sized once at start-up; never
// grows. An optional host tier holds swapped-out blocks in the same per-block layout: host block
// h of slot s, K or V, at ((s * 2 + kv) * host_blocks + h).
//
// Offload (one sequence larger than the device cache): blocks num_blocks() .. num_blocks() +
// num_offload_blocks() - 1 continue each layer's buffers in host memory that the kernels read
// and write in place (Backend::AllocateWithHostTail), so block ids past the device's are
// ordinary block ids whose bytes cross the host link. A prefill chunk reads its whole context
// once per tile of query rows, so offloaded blocks would cross the link many times per chunk:
// before a layer's prefill attention the model runner stages the step's offloaded blocks into a
// device window (StageOffloaded) and points the block table at their window copies
// (WindowBlock). The window holds every offload block of one layer and is one piece of device
// memory that every layer's range maps (Backend::HostTailWindow), so it costs 1/num_layers of
// the offload tier.
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/kv/kv_groups.h"
#include "runtime/model/model_config.h"

namespace kvs {

class KvCache {
 public:
  // Bytes of one block (a slab of KvGroups::slots() layers, K and V) for a model (or a rank's
  // shard of it): the one accounting the runtime, `kvshard plan` and the swap cost model share.
  static size_t BytesPerBlock(const ModelConfig& c, KvDType dtype, int32_t block_size);
  // Blocks that fit in `budget_bytes`.
  static int32_t BlocksForBudget(const ModelConfig& c, KvDType dtype, int32_t block_size, size_t budget_bytes);
  static absl::StatusOr<KvCache> Create(Backend& backend, const ModelConfig& c, KvDType dtype, int32_t block_size,
                                        int32_t num_blocks, int32_t num_offload_blocks = 0);

  // Channel-quantized formats (KvChannelQuantized): residual rings for `seqs` sequences in every
  // layer group — each running sequence's newest tokens in bf16 until the ring lets go of their
  // block (KvResidualRing, kernels/common/paged_kv.h). Sequence residual r of group g is ring
  // r * groups + g.
  // Each sequence's ring keeps its newest `residual_tokens` tokens or more in bf16
  // (KvGroups::Ring: whole blocks, no more than the smallest window; with a sink for its first
  // block where it keeps any).
  absl::Status AddResiduals(Backend& backend, int32_t seqs, int32_t residual_tokens = 0, bool sink = true);
  // Device bytes AddResiduals(seqs, residual_tokens) takes (0 for the other formats), for
  // capacity planning.
  static size_t ResidualBytes(const ModelConfig& c, KvDType dtype, int32_t block_size, int32_t seqs,
                              int32_t residual_tokens = 0, bool sink = true);
  int32_t num_residual_seqs() const { return residual_seqs_; }
  const KvResidualRing& ring() const { return ring_; }  // each sequence's (KvResidualRing)
  // Adds `num_host_blocks` blocks of host memory (pinned on CUDA) for swapping.
  absl::Status AddHostTier(Backend& backend, int32_t num_host_blocks);
  // Queues one step's block moves beside the ops (Backend::MoveRegions), with the effect of
  // running them one by one in this order: `swap_out` pairs (device block, host block), then
  // `copies` pairs (source, destination) among device and offload blocks — the copy-on-write of a
  // block shared by forked sequences, and blocks an offloading sequence moves out of device
  // memory — then `swap_in` pairs (host block, device block); every list flattened. With
  // `by_layer`, layer by layer: move slot l marks the end of layer l's pieces, so the ops of
  // layer l wait only for those (Backend::WaitMoves(l)) while later layers' pieces are still
  // moving. Without, in as few batches as the order allows (fewer launches), and only the last
  // slot, move_slots() - 1, is marked. Slots are slab slots: layer l waits for MoveSlot(l). Everything is checked before anything moves.
  absl::Status QueueMoves(Backend& backend, std::span<const int32_t> swap_out, std::span<const int32_t> copies,
                          std::span<const int32_t> swap_in, bool by_layer = true) const;
  // What QueueMoves hands to Backend::MoveRegions.
  struct MovePlan {
    std::vector<CopyRegion> regions;
    std::vector<Backend::MoveBatch> batches;
  };
  absl::StatusOr<MovePlan> PlanMoves(std::span<const int32_t> swap_out, std::span<const int32_t> copies,
                                     std::span<const int32_t> swap_in, bool by_layer = true) const;
  int32_t num_host_blocks() const { return num_host_blocks_; }
  // Bytes of one block over its slab, K and V: what a swap of one block moves each way.
  size_t bytes_per_block() const { return 2 * static_cast<size_t>(k_.size()) * BlockBytes(); }
  KvDType dtype() const { return dtype_; }

  const KvGroups& groups() const { return groups_; }
  int32_t num_layers() const { return groups_.num_layers(); }
  // The move mark layer l waits for, and how many marks a by-layer move plan sets.
  int32_t MoveSlot(int32_t layer) const { return groups_.slot_of(layer); }
  int32_t move_slots() const { return static_cast<int32_t>(k_.size()); }
  // Views every addressable block: device and offload.
  PagedKvView Layer(int32_t layer) const;
  int32_t num_blocks() const { return num_blocks_; }  // in device memory
  int32_t num_offload_blocks() const { return num_offload_blocks_; }
  int32_t num_addressable_blocks() const { return num_blocks_ + num_offload_blocks_; }
  int32_t block_size() const { return block_size_; }
  size_t bytes() const { return bytes_; }  // device memory only (the staging window included)

  // The staging window (offload only): block id of offload block `block`'s window copy, valid in
  // every layer's view until the next layer is staged; StageOffloaded copies layer `layer`'s
  // `blocks` (offload ids) there, stream-ordered with the ops.
  bool has_staging_window() const { return window_first_ >= 0; }
  int32_t WindowBlock(int32_t block) const { return window_first_ + (block - num_blocks_); }
  absl::Status StageOffloaded(Backend& backend, int32_t layer, std::span<const int32_t> blocks) const;
  // Device bytes of the staging window for `offload_blocks` blocks (upper bound: 2 MiB mapping
  // granules), for capacity planning.
  static size_t StagingWindowBytes(const ModelConfig& c, KvDType dtype, int32_t block_size, int32_t offload_blocks);

 private:
  size_t BlockBytes() const { return static_cast<size_t>(KvBlockBytes(dtype_, block_size_, kv_heads_, head_dim_)); }
  std::byte* HostBlock(int32_t slot, int kv, int32_t block) const;
  explicit KvCache(KvGroups groups) : groups_(std::move(groups)) {}

 public:
  KvCache() = default;

 private:

  KvGroups groups_;
  std::vector<DeviceBuffer> k_, v_;  // per slab slot
  std::vector<DeviceBuffer> k_residual_, v_residual_;  // per slab slot (channel-quantized formats)
  int32_t residual_seqs_ = 0;
  KvResidualRing ring_{1, 1, false};
  HostBuffer host_{nullptr, nullptr};
  int32_t num_host_blocks_ = 0, num_offload_blocks_ = 0;
  int32_t window_first_ = -1;  // block id of the staging window's first slot; -1: none
  KvDType dtype_ = KvDType::kF32;
  int32_t num_blocks_ = 0, block_size_ = 0, kv_heads_ = 0, head_dim_ = 0;
  size_t bytes_ = 0;
};

}  // namespace kvs
