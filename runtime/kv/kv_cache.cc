#include "runtime/kv/kv_cache.h"

#include <algorithm>
#include <atomic>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

size_t KvCache::BytesPerBlock(const ModelConfig& c, KvDType dtype, int32_t block_size) {
  const KvGroups groups(c.num_layers, c.layer_windows);
  return 2 * static_cast<size_t>(groups.slots()) * KvBlockBytes(dtype, block_size, c.num_kv_heads, c.head_dim);
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
  if (const std::string problem = backend.KvDTypeProblem(dtype, c.head_dim); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("this model's attention (head_dim %d) with --kv-dtype %s cannot run on "
                                                      "the %s backend: %s",
                                                      c.head_dim, KvDTypeName(dtype), backend.Name(), problem));
  }
  KvCache kv(KvGroups(c.num_layers, c.layer_windows));
  if (const std::string problem = kv.groups_.any_windowed() ? backend.AttentionWindowProblem(dtype, c.head_dim) : ""; !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("this model's sliding-window layers cannot run on the %s backend: %s",
                                                      backend.Name(), problem));
  }
  kv.dtype_ = dtype;
  kv.num_blocks_ = num_blocks;
  kv.num_offload_blocks_ = num_offload_blocks;
  kv.block_size_ = block_size;
  kv.kv_heads_ = c.num_kv_heads;
  kv.head_dim_ = c.head_dim;
  const size_t per_slot = static_cast<size_t>(num_blocks) * kv.BlockBytes();
  const size_t offload_per_slot = static_cast<size_t>(num_offload_blocks) * kv.BlockBytes();
  // The staging window's slots start at the first block id whose byte offset is a whole number
  // of mapping granules past the offload blocks (it is mapped there), and hold one layer's
  // offload blocks. K and V each have one, shared by every layer; ids unique to this cache.
  HostTailWindow k_window, v_window;
  if (num_offload_blocks > 0) {
    const size_t align = backend.HostTailAlignment();
    const size_t bb = kv.BlockBytes();
    const int64_t step = static_cast<int64_t>(align / std::gcd(bb, align));
    const int64_t first = (static_cast<int64_t>(num_blocks) + num_offload_blocks + step - 1) / step * step;
    if (first + num_offload_blocks < (int64_t{1} << 31)) {
      static std::atomic<int32_t> next_window_id{0};
      kv.window_first_ = static_cast<int32_t>(first);
      const size_t bytes = (offload_per_slot + align - 1) / align * align;
      const int32_t id = next_window_id.fetch_add(2);
      k_window = {id, static_cast<size_t>(first) * bb, bytes};
      v_window = {id + 1, static_cast<size_t>(first) * bb, bytes};
      kv.bytes_ += 2 * bytes;
    }
  }
  for (int32_t slot = 0; slot < kv.groups_.slots(); ++slot) {
    KVS_ASSIGN_OR_RETURN(DeviceBuffer k, backend.AllocateWithHostTail(per_slot, offload_per_slot, k_window));
    KVS_ASSIGN_OR_RETURN(DeviceBuffer v, backend.AllocateWithHostTail(per_slot, offload_per_slot, v_window));
    kv.k_.push_back(std::move(k));
    kv.v_.push_back(std::move(v));
    kv.bytes_ += 2 * per_slot;
  }
  return kv;
}

size_t KvCache::StagingWindowBytes(const ModelConfig& c, KvDType dtype, int32_t block_size, int32_t offload_blocks) {
  if (offload_blocks <= 0) return 0;
  constexpr size_t kGranule = size_t{2} << 20;
  const size_t layer = static_cast<size_t>(offload_blocks) * KvBlockBytes(dtype, block_size, c.num_kv_heads, c.head_dim);
  return 2 * ((layer + kGranule - 1) / kGranule * kGranule);
}

absl::Status KvCache::StageOffloaded(Backend& backend, int32_t layer, std::span<const int32_t> blocks) const {
  if (!has_staging_window()) return absl::FailedPreconditionError("this KV cache has no staging window");
  if (layer < 0 || layer >= num_layers()) return absl::InvalidArgumentError(absl::StrFormat("no layer %d", layer));
  const size_t bb = BlockBytes();
  std::vector<CopyRegion> regions;
  regions.reserve(2 * blocks.size());
  for (const std::vector<DeviceBuffer>* side : {&k_, &v_}) {
    std::byte* base = static_cast<std::byte*>((*side)[MoveSlot(layer)].data());
    for (int32_t b : blocks) {
      if (b < num_blocks_ || b >= num_addressable_blocks()) {
        return absl::InvalidArgumentError(absl::StrFormat("block %d is not an offload block (%d..%d)", b, num_blocks_,
                                                          num_addressable_blocks() - 1));
      }
      regions.push_back(CopyRegion{base + static_cast<size_t>(b) * bb, base + static_cast<size_t>(WindowBlock(b)) * bb, bb});
    }
  }
  return backend.CopyRegions(regions);
}

size_t KvCache::ResidualBytes(const ModelConfig& c, KvDType dtype, int32_t block_size, int32_t seqs,
                              int32_t residual_tokens, bool sink) {
  if (!KvChannelQuantized(dtype)) return 0;
  const KvGroups groups(c.num_layers, c.layer_windows);
  const size_t block = static_cast<size_t>(block_size) * c.num_kv_heads * c.head_dim * 2;  // bf16
  return 2 * static_cast<size_t>(groups.slots()) * groups.num_groups() * seqs *
         groups.Ring(residual_tokens, block_size, sink).blocks * block;
}

absl::Status KvCache::AddResiduals(Backend& backend, int32_t seqs, int32_t residual_tokens, bool sink) {
  if (residual_tokens < 0) return absl::InvalidArgumentError("--kv-residual-tokens must be >= 0");
  if (!KvChannelQuantized(dtype_) || seqs <= 0) return absl::OkStatus();
  if (!k_residual_.empty()) return absl::FailedPreconditionError("this KV cache has its residual blocks");
  const KvResidualRing ring = groups_.Ring(residual_tokens, block_size_, sink);
  const size_t bytes =
      static_cast<size_t>(seqs) * groups_.num_groups() * ring.blocks * block_size_ * kv_heads_ * head_dim_ * 2;
  for (int32_t slot = 0; slot < groups_.slots(); ++slot) {
    KVS_ASSIGN_OR_RETURN(DeviceBuffer k, backend.Allocate(bytes));
    KVS_ASSIGN_OR_RETURN(DeviceBuffer v, backend.Allocate(bytes));
    k_residual_.push_back(std::move(k));
    v_residual_.push_back(std::move(v));
    bytes_ += 2 * bytes;
  }
  residual_seqs_ = seqs;
  ring_ = ring;
  return absl::OkStatus();
}

absl::Status KvCache::AddHostTier(Backend& backend, int32_t num_host_blocks) {
  if (num_host_blocks < 0) return absl::InvalidArgumentError("host block count must be >= 0");
  if (num_host_blocks == 0) return absl::OkStatus();
  const size_t bytes = static_cast<size_t>(num_host_blocks) * bytes_per_block();
  KVS_ASSIGN_OR_RETURN(host_, backend.AllocateHost(bytes));
  num_host_blocks_ = num_host_blocks;
  return absl::OkStatus();
}

std::byte* KvCache::HostBlock(int32_t slot, int kv, int32_t block) const {
  return host_.get() + ((static_cast<size_t>(slot) * 2 + kv) * num_host_blocks_ + block) * BlockBytes();
}

namespace {

// One block move: a block of the cache (device or offload) or of the host tier, to another.
struct BlockMove {
  int32_t src, dst;
  bool src_host, dst_host;
};

// Appends the pairs of `list` as moves, each end checked against its tier's block count.
absl::Status AddMoves(std::span<const int32_t> list, const char* what, bool src_host, bool dst_host,
                      int32_t cache_blocks, int32_t host_blocks, std::vector<BlockMove>& moves) {
  if (list.size() % 2 != 0) return absl::InvalidArgumentError(absl::StrFormat("%s list must hold pairs", what));
  for (size_t i = 0; i < list.size(); i += 2) {
    const BlockMove m{list[i], list[i + 1], src_host, dst_host};
    const int32_t src_limit = src_host ? host_blocks : cache_blocks, dst_limit = dst_host ? host_blocks : cache_blocks;
    if (m.src < 0 || m.src >= src_limit || m.dst < 0 || m.dst >= dst_limit) {
      return absl::OutOfRangeError(absl::StrFormat("%s of %s block %d to %s block %d is outside the cache (%d cache, %d host blocks)",
                                                   what, src_host ? "host" : "cache", m.src, dst_host ? "host" : "cache",
                                                   m.dst, cache_blocks, host_blocks));
    }
    moves.push_back(m);
  }
  return absl::OkStatus();
}

// Where each batch of `moves` ends. The moves of a batch run in parallel, so a move that writes
// a block an earlier move of its batch reads or writes, or reads a block one writes, starts the
// next batch: the list's order is kept.
std::vector<size_t> BatchEnds(std::span<const BlockMove> moves) {
  auto key = [](int32_t block, bool host) { return (static_cast<int64_t>(host) << 32) | static_cast<uint32_t>(block); };
  std::vector<size_t> ends;
  absl::flat_hash_set<int64_t> read, written;
  for (size_t i = 0; i < moves.size(); ++i) {
    const int64_t src = key(moves[i].src, moves[i].src_host), dst = key(moves[i].dst, moves[i].dst_host);
    if (read.contains(dst) || written.contains(dst) || written.contains(src)) {
      ends.push_back(i);
      read.clear();
      written.clear();
    }
    read.insert(src);
    written.insert(dst);
  }
  ends.push_back(moves.size());
  return ends;
}

}  // namespace

absl::Status KvCache::QueueMoves(Backend& backend, std::span<const int32_t> swap_out, std::span<const int32_t> copies,
                                 std::span<const int32_t> swap_in, bool by_layer) const {
  KVS_ASSIGN_OR_RETURN(const MovePlan plan, PlanMoves(swap_out, copies, swap_in, by_layer));
  if (plan.batches.empty()) return absl::OkStatus();
  return backend.MoveRegions(plan.regions, plan.batches, /*beside_ops=*/by_layer);
}

absl::StatusOr<KvCache::MovePlan> KvCache::PlanMoves(std::span<const int32_t> swap_out, std::span<const int32_t> copies,
                                                     std::span<const int32_t> swap_in, bool by_layer) const {
  std::vector<BlockMove> moves;
  const int32_t cache_blocks = num_addressable_blocks();
  KVS_RETURN_IF_ERROR(AddMoves(swap_out, "swap-out", false, true, cache_blocks, num_host_blocks_, moves));
  KVS_RETURN_IF_ERROR(AddMoves(copies, "copy", false, false, cache_blocks, num_host_blocks_, moves));
  KVS_RETURN_IF_ERROR(AddMoves(swap_in, "swap-in", true, false, cache_blocks, num_host_blocks_, moves));
  MovePlan plan;
  if (moves.empty()) return plan;
  const std::vector<size_t> ends = BatchEnds(moves);
  const size_t bb = BlockBytes();
  std::vector<CopyRegion>& regions = plan.regions;
  regions.reserve(moves.size() * 2 * k_.size());
  std::vector<Backend::MoveBatch>& batches = plan.batches;
  auto add_pieces = [&](const BlockMove& m, int32_t l) {
    for (int kv = 0; kv < 2; ++kv) {
      auto* base = static_cast<std::byte*>((kv == 0 ? k_ : v_)[l].data());
      const std::byte* src = m.src_host ? HostBlock(l, kv, m.src) : base + static_cast<size_t>(m.src) * bb;
      std::byte* dst = m.dst_host ? HostBlock(l, kv, m.dst) : base + static_cast<size_t>(m.dst) * bb;
      regions.push_back({src, dst, bb});
    }
  };
  // The batches over slab slots [first, last), the last one marking `mark`.
  auto add_batches = [&](int32_t first, int32_t last, int32_t mark) {
    size_t begin = 0;
    for (size_t end : ends) {
      for (size_t i = begin; i < end; ++i) {
        for (int32_t l = first; l < last; ++l) add_pieces(moves[i], l);
      }
      batches.push_back({static_cast<int64_t>(2 * (end - begin)) * (last - first), end == moves.size() ? mark : -1});
      begin = end;
    }
  };
  // One piece per (move, slab slot, K or V). By layer: slot 0's first (the first layer's), so the
  // ops can start while the rest move; the batches repeat for every slot.
  if (by_layer) {
    for (int32_t s = 0; s < move_slots(); ++s) add_batches(s, s + 1, s);
  } else {
    add_batches(0, move_slots(), move_slots() - 1);
  }
  return plan;
}

PagedKvView KvCache::Layer(int32_t layer) const {
  KVS_CHECK(layer >= 0 && layer < num_layers());
  const int32_t blocks = has_staging_window() ? window_first_ + num_offload_blocks_ : num_addressable_blocks();
  const int32_t slot = groups_.slot_of(layer), window = groups_.window(groups_.group_of(layer));
  PagedKvView view{k_[slot].data(), v_[slot].data(), dtype_, blocks, block_size_, kv_heads_, head_dim_, window};
  if (!k_residual_.empty()) {
    view.k_residual = k_residual_[slot].data();
    view.v_residual = v_residual_[slot].data();
    view.num_residual = residual_seqs_ * groups_.num_groups();
    view.residual_blocks = ring_.blocks;
    view.residual_sink = ring_.sink;
  }
  return view;
}

}  // namespace kvs
