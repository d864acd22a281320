#include "runtime/engine/model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

// Element counts of the runner's buffers, from the shard's view of the model.
struct Sizes {
  int64_t t, s, h, q, q_owned, kv, qkv, inter, vocab, vocab_slot, groups, blocks, tp;
  Sizes(const ModelWeights& w, RunnerLimits l, int tp_size) : Sizes(w.config(), w.shard(), l, tp_size) {}
  Sizes(const ModelConfig& global, const ModelShard& shard, RunnerLimits l, int tp_size)
      : t(l.max_tokens_per_step), s(l.max_seqs), h(global.hidden_size) {
    const int64_t d = global.head_dim;
    q = static_cast<int64_t>(shard.ComputedQHeads(global).size()) * d;
    q_owned = static_cast<int64_t>(shard.q_heads.size()) * d;
    kv = static_cast<int64_t>(shard.kv_heads.size()) * d;
    qkv = q + 2 * kv;
    inter = shard.intermediate.size();
    vocab = shard.vocab.size();
    // Ranks' slices differ by at most one row; every rank pads its slice to the widest.
    tp = tp_size;
    vocab_slot = tp == 1 ? vocab : (global.vocab_size + tp - 1) / tp;
    groups = KvGroups(global.num_layers, global.layer_windows).num_groups();  // a block table and slots each
    blocks = groups * l.max_seqs * l.max_blocks_per_seq;
  }
  // Compute-dtype activations; the residual [t, h] and logits [s, vocab] are f32 (below).
  int64_t ActivationElems() const { return t * (2 * h + qkv + q + 3 * inter) + s * h; }
  // Tensor parallel: every rank's logits slices gathered, then (rank 0, device sampling) whole rows.
  int64_t F32Elems() const { return t * h + s * vocab_slot + (tp > 1 ? 2 * tp * s * vocab_slot : 0); }
  int64_t IndexElems() const {
    return MetaElems() + (tp > 1 ? 2 * s * (tp + 1) : 0) + SampleWords();
  }
  // A step's metadata (ModelRunner::PackStep): tokens, positions, slots, query starts, context
  // lengths, block tables, logit rows, residual rings (per group), sealed positions and sinks.
  int64_t MetaElems() const { return (2 + groups) * t + (s + 1) + s + blocks + s + groups * s + 2 * s; }
  // Device sampling's requests and ids.
  int64_t SampleWords() const { return 2 * s * (sizeof(SampleRequest) / 4 + 1); }
};

}  // namespace

size_t ModelRunner::WorkspaceBytes(const ModelWeights& weights, RunnerLimits limits, int tp_size) {
  return WorkspaceBytes(weights.config(), weights.shard(), weights.dtype(), limits, tp_size);
}

size_t ModelRunner::WorkspaceBytes(const ModelConfig& c, const ModelShard& shard, DType dtype, RunnerLimits limits,
                                   int tp_size) {
  const Sizes z(c, shard, limits, tp_size);
  return z.ActivationElems() * DTypeSize(dtype) + (z.F32Elems() + z.IndexElems()) * sizeof(int32_t);
}

absl::StatusOr<ModelRunner> ModelRunner::Create(Backend& backend, const ModelWeights& weights,
                                                const KvCache& cache, RunnerLimits limits, TensorParallel tp) {
  if (limits.max_tokens_per_step <= 0 || limits.max_seqs <= 0 || limits.max_blocks_per_seq <= 0) {
    return absl::InvalidArgumentError("runner limits must be positive");
  }
  if (tp.size() > 1 && tp.vocab_by_rank.size() != static_cast<size_t>(tp.size())) {
    return absl::InvalidArgumentError("tensor parallel runner needs every rank's vocab range");
  }
  ModelRunner r;
  r.backend_ = &backend;
  r.weights_ = &weights;
  r.cache_ = &cache;
  r.limits_ = limits;
  r.tp_ = tp;
  // Under tensor parallelism only with collectives that can be recorded (NCCL): every rank
  // records and replays the same graphs, as it runs the same steps.
  r.graphs_enabled_ = limits.graphs && (tp.size() == 1 || tp.comm->Capturable());
  const Sizes z(weights, limits, tp.size());
  r.vocab_slot_ = z.vocab_slot;
  const size_t e = DTypeSize(weights.dtype());
  auto alloc = [&](DeviceBuffer& b, int64_t elems, size_t elem_size) -> absl::Status {
    KVS_ASSIGN_OR_RETURN(b, backend.Allocate(static_cast<size_t>(elems) * elem_size));
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(alloc(r.hidden_, z.t * z.h, e));
  KVS_RETURN_IF_ERROR(alloc(r.residual_, z.t * z.h, sizeof(float)));
  KVS_RETURN_IF_ERROR(alloc(r.normed_, z.t * z.h, e));
  KVS_RETURN_IF_ERROR(alloc(r.qkv_, z.t * z.qkv, e));
  KVS_RETURN_IF_ERROR(alloc(r.attn_, z.t * z.q, e));
  KVS_RETURN_IF_ERROR(alloc(r.gate_up_, z.t * 2 * z.inter, e));
  KVS_RETURN_IF_ERROR(alloc(r.act_, z.t * z.inter, e));
  KVS_RETURN_IF_ERROR(alloc(r.last_, z.s * z.h, e));
  KVS_RETURN_IF_ERROR(alloc(r.logits_, z.s * z.vocab_slot, sizeof(float)));
  KVS_RETURN_IF_ERROR(alloc(r.meta_, z.MetaElems(), 4));
  // Greedy ids, then (tensor parallel) their values: this rank's candidates.
  KVS_RETURN_IF_ERROR(alloc(r.greedy_ids_, 2 * z.s, 4));
  KVS_RETURN_IF_ERROR(alloc(r.samples_, z.SampleWords(), 4));
  if (z.tp > 1) {
    KVS_RETURN_IF_ERROR(alloc(r.gathered_, z.tp * z.s * z.vocab_slot, sizeof(float)));
    KVS_RETURN_IF_ERROR(alloc(r.candidates_, z.tp * 2 * z.s, 4));
    if (tp.rank() == 0) {
      r.host_gathered_.resize(z.tp * z.s * z.vocab_slot);
      KVS_RETURN_IF_ERROR(alloc(r.whole_logits_, z.s * static_cast<int64_t>(weights.config().vocab_size), sizeof(float)));
    }
  }
  r.host_ids_.resize(std::max<int64_t>(z.s * 2 * z.tp, r.MaxDeviceSamples()));
  r.meta_host_.reserve(z.IndexElems());
  r.host_logits_.resize(z.s * weights.config().vocab_size);
  const ModelConfig& c = weights.local_config();
  KVS_RETURN_IF_ERROR(backend.ReserveWorkspace(z.t, limits.max_seqs, c.num_q_heads, c.head_dim));
  const PagedKvView layer0 = cache.Layer(0);
  KVS_RETURN_IF_ERROR(
      backend.ReservePrefillKvScratch(layer0.dtype, layer0.block_size, layer0.kv_heads, layer0.head_dim,
                                      static_cast<int64_t>(limits.max_blocks_per_seq) * layer0.block_size));
  return r;
}

namespace {

// Padded batch sizes of graphed decode steps: 1, 2, 4, then multiples of 8 (vLLM's choice too):
// few graphs, at most 7 rows of padding.
int32_t RoundUpBatch(int32_t s) {
  if (s <= 4) return s <= 1 ? 1 : s <= 2 ? 2 : 4;
  return (s + 7) / 8 * 8;
}

// The context length a graphed step plans its attention for (the split-K plan is baked into
// the graph): rounded up to a quarter of its power of two, so a graph serves a range of lengths
// with at most 25% more planned keys than needed (splits past a sequence's end are empty).
int32_t RoundUpContext(int32_t len) {
  if (len <= 256) return 256;
  int32_t p = 256;
  while (p * 2 <= len) p *= 2;
  const int32_t step = p / 4;
  return static_cast<int32_t>((static_cast<int64_t>(len) + step - 1) / step * step);
}

}  // namespace

bool ModelRunner::Graphable(const StepInput& in) const {
  // Pure decode, every row sampled.
  if (!graphs_enabled_) return false;
  // Channel-quantized caches pad with rows that must seal nothing (PackPaddedDecode): not so for
  // a one-block ring of one-token blocks, whose every token seals.
  if (!in.residual.empty() && cache_->ring().SealedEnd(1) > 0) return false;
  const int32_t s = in.num_seqs();
  if (in.num_tokens() != s || in.logit_rows.size() != static_cast<size_t>(s)) return false;
  for (int32_t i = 0; i < s; ++i) {
    if (in.logit_rows[i] != i) return false;
  }
  // The block table must fit the width a graph of this context class holds.
  const int32_t longest = *std::max_element(in.context_len.begin(), in.context_len.end());
  return in.max_blocks_per_seq <= GraphTableWidth(RoundUpContext(longest));
}

int32_t ModelRunner::GraphTableWidth(int32_t context_class) const {
  // Enough blocks for the class's longest context, not the runner's: the table is copied to
  // the device every step.
  const int32_t bs = cache_->block_size();
  return std::min((context_class + bs - 1) / bs, limits_.max_blocks_per_seq);
}

int32_t ModelRunner::DecodeBucket(int32_t s) const {
  const int32_t b = RoundUpBatch(s);
  if (b <= limits_.max_seqs && b <= limits_.max_tokens_per_step) return b;
  return s;
}

const int32_t* ModelRunner::Pack(std::span<const int32_t> v) {
  const int32_t* at = meta_.as<int32_t>() + meta_host_.size();
  meta_host_.insert(meta_host_.end(), v.begin(), v.end());
  return at;
}

bool ModelRunner::PlanStaging(const StepInput& in) {
  staged_.clear();
  table_.clear();
  if (!cache_->has_staging_window()) return false;
  // A sequence with more than one query row runs the prefill kernel, which reads its context
  // once per tile of query rows: in place, offloaded blocks would cross the host link that many
  // times. Staged, they cross once per layer (decode rows read each block once either way).
  const int32_t s = in.num_seqs(), width = in.max_blocks_per_seq, bs = cache_->block_size();
  const int32_t first_offload = cache_->num_blocks(), end_offload = cache_->num_addressable_blocks();
  const size_t group_table = static_cast<size_t>(s) * width;
  for (int32_t g = 0; g < in.num_kv_groups; ++g) {
    for (int32_t i = 0; i < s; ++i) {
      if (in.query_start[i + 1] - in.query_start[i] < 2) continue;
      const int32_t used = std::min(width, (in.context_len[i] + bs - 1) / bs);
      for (int32_t j = 0; j < used; ++j) {
        const size_t at = g * group_table + static_cast<size_t>(i) * width + j;
        const int32_t b = in.block_table[at];
        if (b < first_offload || b >= end_offload) continue;
        if (table_.empty()) table_.assign(in.block_table.begin(), in.block_table.end());
        table_[at] = cache_->WindowBlock(b);
        staged_.push_back(b);
      }
    }
  }
  // A block shared by two sequences (a forked prefix) is staged once.
  std::sort(staged_.begin(), staged_.end());
  staged_.erase(std::unique(staged_.begin(), staged_.end()), staged_.end());
  staged_blocks_ += static_cast<int64_t>(staged_.size());
  return !staged_.empty();
}

void ModelRunner::PackStep(const StepInput& in, std::span<const int32_t> block_table, StepPointers& ptr,
                           AttentionBatch& batch) {
  meta_host_.clear();
  ptr.token_ids = Pack(in.token_ids);
  ptr.positions = Pack(in.positions);
  ptr.slots = Pack(in.slot_mapping);  // [G][T]
  ptr.slot_stride = in.num_tokens();
  batch.query_start = Pack(in.query_start);
  batch.context_len = Pack(in.context_len);
  batch.block_table = Pack(block_table);  // [G][S * max_blocks_per_seq]
  ptr.table_stride = static_cast<int64_t>(in.num_seqs()) * in.max_blocks_per_seq;
  if (!in.residual.empty()) {  // group g's residual ring of sequence s: residual[s] * G + g
    batch.residual = meta_.as<int32_t>() + meta_host_.size();
    for (int32_t g = 0; g < in.num_kv_groups; ++g) {
      for (int32_t r : in.residual) meta_host_.push_back(r * in.num_kv_groups + g);
    }
    batch.sealed = Pack(in.sealed);  // positions: the same in every group
    batch.sink = Pack(in.sink);
  }
  ptr.logit_rows = Pack(in.logit_rows);
  const int32_t s = in.num_seqs();
  batch.num_seqs = s;
  batch.num_tokens = static_cast<int32_t>(in.num_tokens());
  batch.max_blocks_per_seq = in.max_blocks_per_seq;
  batch.max_context_len = *std::max_element(in.context_len.begin(), in.context_len.end());
  batch.max_query_len = 0;
  for (int32_t i = 0; i < s; ++i) {
    batch.max_query_len = std::max(batch.max_query_len, in.query_start[i + 1] - in.query_start[i]);
  }
}

void ModelRunner::PackPaddedDecode(const StepInput& in, int32_t rows, StepPointers& ptr, AttentionBatch& batch) {
  // The same layout for every step of this padded size and context class (a graph holds these
  // addresses): arrays of `rows` entries and a block table as wide as the class needs. Padding
  // rows decode token 0 at position 0 against one key of block 0, write no KV (slot -1) and are
  // never sampled.
  const int32_t context_class = RoundUpContext(*std::max_element(in.context_len.begin(), in.context_len.end()));
  const int32_t s = in.num_seqs(), width = GraphTableWidth(context_class);
  meta_host_.clear();
  // Each array straight into the host copy of the metadata: the step's values, then padding.
  auto padded = [&](const std::vector<int32_t>& v, int32_t fill) {
    const int32_t* at = Pack(v);
    meta_host_.resize(meta_host_.size() + (rows - v.size()), fill);
    return at;
  };
  auto counting = [&](int32_t n) {  // 0, 1, ..., n - 1
    const int32_t* at = meta_.as<int32_t>() + meta_host_.size();
    for (int32_t i = 0; i < n; ++i) meta_host_.push_back(i);
    return at;
  };
  ptr.token_ids = padded(in.token_ids, 0);
  ptr.positions = padded(in.positions, 0);
  // Each KV group's slots and block table, padded.
  ptr.slots = meta_.as<int32_t>() + meta_host_.size();
  ptr.slot_stride = rows;
  for (int32_t g = 0; g < in.num_kv_groups; ++g) {
    const std::span<const int32_t> slots = in.GroupSlots(g);
    meta_host_.insert(meta_host_.end(), slots.begin(), slots.end());
    meta_host_.resize(meta_host_.size() + (rows - slots.size()), -1);
  }
  batch.query_start = counting(rows + 1);  // one query per sequence
  batch.context_len = padded(in.context_len, 1);
  batch.block_table = meta_.as<int32_t>() + meta_host_.size();
  ptr.table_stride = static_cast<int64_t>(rows) * width;
  for (int32_t g = 0; g < in.num_kv_groups; ++g) {
    const size_t table = meta_host_.size();
    const std::span<const int32_t> group = in.GroupTable(g);
    meta_host_.resize(table + static_cast<size_t>(rows) * width, 0);
    for (int32_t i = 0; i < s; ++i) {
      std::copy_n(group.begin() + static_cast<int64_t>(i) * in.max_blocks_per_seq, in.max_blocks_per_seq,
                  meta_host_.begin() + table + static_cast<size_t>(i) * width);
    }
  }
  if (!in.residual.empty()) {
    // Channel-quantized caches: each group's rings, the sealed positions and the sinks. A padding
    // row (one token at position 0, Graphable) seals nothing and reads its key from the ring of
    // sequence 0 (valid memory; the row writes no KV and is never sampled).
    batch.residual = meta_.as<int32_t>() + meta_host_.size();
    for (int32_t g = 0; g < in.num_kv_groups; ++g) {
      for (int32_t r : in.residual) meta_host_.push_back(r * in.num_kv_groups + g);
      meta_host_.resize(meta_host_.size() + (rows - s), g);
    }
    batch.sealed = padded(in.sealed, 0);
    batch.sink = padded(in.sink, 0);
  }
  ptr.logit_rows = counting(rows);
  batch.num_seqs = rows;
  batch.num_tokens = rows;
  batch.max_blocks_per_seq = width;
  batch.max_context_len = context_class;
  batch.max_query_len = 1;
}

absl::Status ModelRunner::RunGraphed(const StepPointers& ptr, int64_t rows, const AttentionBatch& batch,
                                     bool wait_moves) {
  const uint64_t key = (static_cast<uint64_t>(wait_moves) << 63) | (static_cast<uint64_t>(rows) << 32) |
                       static_cast<uint32_t>(batch.max_context_len);
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    ++graph_replays_;
    return it->second->Replay();
  }
  // First step of this shape: run it directly (library set-up and lazy kernel attributes happen
  // outside the capture), then record the same ops for the next ones.
  KVS_RETURN_IF_ERROR(Forward(ptr, rows, rows, batch, wait_moves));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<RecordedOps> graph,
                       backend_->Record([&]() { return Forward(ptr, rows, rows, batch, wait_moves); }));
  if (graph == nullptr) {
    graphs_enabled_ = false;  // this backend cannot record: every later step runs directly
    return absl::OkStatus();
  }
  if (graphs_.size() >= kMaxGraphs) graphs_.clear();  // a bound on graph memory; rebuilt on demand
  graphs_.emplace(key, std::move(graph));
  return absl::OkStatus();
}

absl::Status ModelRunner::Forward(const StepPointers& ptr, int64_t t, int64_t n_logits, const AttentionBatch& batch,
                                  bool wait_moves) {
  const ModelConfig& global = weights_->config();
  const ModelConfig& c = weights_->local_config();
  const Sizes z(*weights_, limits_, tp_.size());
  const DType dt = weights_->dtype();
  Backend& b = *backend_;
  Collectives* comm = tp_.comm;
  const ModelShard& shard = weights_->shard();
  const TensorView hidden = hidden_.View(dt, t, z.h);
  const TensorView residual = residual_.View(DType::kF32, t, z.h);
  const TensorView normed = normed_.View(dt, t, z.h);
  const TensorView qkv = qkv_.View(dt, t, z.qkv);
  const TensorView q = qkv.Cols(0, z.q), k = qkv.Cols(z.q, z.kv), v = qkv.Cols(z.q + z.kv, z.kv);
  const TensorView qk = qkv.Cols(0, z.q + z.kv);
  const TensorView attn = attn_.View(dt, t, z.q);
  // The heads this rank owns among those it computed (all of them unless a GQA group straddles ranks).
  const int64_t owned_from = static_cast<int64_t>(shard.q_heads.begin - shard.ComputedQHeads(global).begin) * c.head_dim;
  const TensorView attn_owned = attn.Cols(owned_from, z.q_owned);
  const TensorView gate_up = gate_up_.View(dt, t, 2 * z.inter);
  const TensorView act = act_.View(dt, t, z.inter);
  const float scale = global.AttentionScale();
  const TensorView no_bias{};
  // Row-parallel outputs are partial sums until every rank's share is added.
  auto reduce = [&](const TensorView& x) { return comm ? comm->AllReduceSum(x) : absl::OkStatus(); };

  KVS_RETURN_IF_ERROR(b.Embedding(ptr.token_ids, weights_->embed(), shard.vocab.begin, residual));
  if (global.embedding_scale != 1.0f) KVS_RETURN_IF_ERROR(b.Scale(residual, global.embedding_scale));
  KVS_RETURN_IF_ERROR(reduce(residual));
  // A row-parallel output (`hidden`, partial sums on each rank) joins the residual stream, which is
  // then normalized into `normed` by `next_norm`: all-reduce, residual add and RMSNorm fused in one
  // kernel where the transport has it (the peer path, small messages); Gemma's post-norm comes
  // between the sum and the add, so it runs them apart.
  auto join = [&](const DeviceBuffer& post_norm, const TensorView& next_norm) -> absl::Status {
    if (comm != nullptr && !c.sandwich_norms) {
      KVS_ASSIGN_OR_RETURN(bool fused, comm->AllReduceAddRmsNorm(hidden, residual, next_norm, c.rms_norm_eps, normed));
      if (fused) return absl::OkStatus();
    }
    KVS_RETURN_IF_ERROR(reduce(hidden));
    if (c.sandwich_norms) KVS_RETURN_IF_ERROR(b.RmsNorm(hidden, weights_->View(post_norm, 1, z.h), c.rms_norm_eps, hidden));
    return b.AddRmsNorm(residual, hidden, next_norm, c.rms_norm_eps, normed);
  };
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights_->layers()[l];
    // Layer l > 0's input norm ran in the previous layer's last join.
    if (l == 0) KVS_RETURN_IF_ERROR(b.RmsNorm(residual, weights_->View(lw.attn_norm, 1, z.h), c.rms_norm_eps, normed));
    const TensorView bias = c.attention_bias ? weights_->View(lw.qkv_bias, 1, z.qkv) : no_bias;
    KVS_RETURN_IF_ERROR(LinearOver(b, normed, lw.qkv, bias, qkv));
    if (c.qk_norm) {  // Qwen3, Gemma 3: each q and k head normalized before rope
      const TensorView head_weight_q = weights_->View(lw.q_norm, 1, c.head_dim);
      const TensorView head_weight_k = weights_->View(lw.k_norm, 1, c.head_dim);
      KVS_RETURN_IF_ERROR(b.HeadRmsNorm(q, static_cast<int32_t>(z.q / c.head_dim), head_weight_q, c.rms_norm_eps));
      KVS_RETURN_IF_ERROR(b.HeadRmsNorm(k, static_cast<int32_t>(z.kv / c.head_dim), head_weight_k, c.rms_norm_eps));
    }
    const PagedKvView cache = cache_->Layer(l);
    // This layer's group's block table and KV slots (kv_groups.h).
    const int32_t group = cache_->groups().group_of(l);
    const int32_t* slots = ptr.slots + group * ptr.slot_stride;
    AttentionBatch layer_batch = batch;
    layer_batch.block_table = batch.block_table + group * ptr.table_stride;
    if (batch.residual != nullptr) layer_batch.residual = batch.residual + static_cast<int64_t>(group) * batch.num_seqs;
    // This layer's block moves (KvCache::QueueMoves), before anything of the layer writes its cache.
    if (wait_moves) KVS_RETURN_IF_ERROR(b.WaitMoves(cache_->MoveSlot(l)));
    // q and k are adjacent columns of qkv: one rotation over both heads' worth, then the KV write
    // (one launch for both where the backend fuses them).
    const int32_t qk_heads = static_cast<int32_t>((z.q + z.kv) / c.head_dim);
    if (KvChannelQuantized(cache.dtype)) {
      // Channel-quantized KV: the blocks the ring lets go of this step are written whole first; the
      // newest tokens then go to the ring (whose rows the seal may read).
      KVS_RETURN_IF_ERROR(b.Rope(qk, qk_heads, ptr.positions, weights_->rope(l)));
      KVS_RETURN_IF_ERROR(b.SealKvGroups(k, v, layer_batch, cache));
      KVS_RETURN_IF_ERROR(b.WriteKv(k, v, slots, cache));
    } else {
      KVS_RETURN_IF_ERROR(b.RopeWriteKv(qk, qk_heads, ptr.positions, weights_->rope(l), k, v, slots, cache));
    }
    // After this layer's KV writes (a chunk's own keys may land in offloaded blocks), before its
    // attention; the next layer's staging overwrites the window only after this attention ran.
    if (!staged_.empty()) KVS_RETURN_IF_ERROR(cache_->StageOffloaded(b, l, staged_));
    KVS_RETURN_IF_ERROR(b.PagedAttention(q, cache, layer_batch, scale, attn));
    KVS_RETURN_IF_ERROR(LinearOver(b, attn_owned, lw.o, no_bias, hidden));
    KVS_RETURN_IF_ERROR(join(lw.post_attn_norm, weights_->View(lw.ffn_norm, 1, z.h)));
    // The gate and up projections and their activation in one kernel where the backend has one
    // (a batch-1 step's GEMV); else the matrix, then the activation.
    const bool gelu = c.activation == Activation::kGeluTanh;
    bool gated = false;
    if (lw.gate_up.parts.size() == 1) {
      KVS_ASSIGN_OR_RETURN(gated, b.GatedLinear(normed, lw.gate_up.View(), gelu, act));
    }
    if (!gated) {
      KVS_RETURN_IF_ERROR(LinearOver(b, normed, lw.gate_up, no_bias, gate_up));
      KVS_RETURN_IF_ERROR(gelu ? b.GeluGlu(gate_up, act) : b.SwiGlu(gate_up, act));
    }
    KVS_RETURN_IF_ERROR(LinearOver(b, act, lw.down, no_bias, hidden));
    if (l + 1 < c.num_layers) {
      KVS_RETURN_IF_ERROR(join(lw.post_ffn_norm, weights_->View(weights_->layers()[l + 1].attn_norm, 1, z.h)));
    } else if (n_logits > 0) {
      // Only the rows that will be sampled go through the LM head; every row through the final norm.
      KVS_RETURN_IF_ERROR(join(lw.post_ffn_norm, weights_->final_norm()));
    }
  }
  if (n_logits == 0) return absl::OkStatus();  // a step with nothing to sample skips the last layer's sum
  const TensorView last = last_.View(dt, n_logits, z.h);
  KVS_RETURN_IF_ERROR(b.GatherRows(normed, ptr.logit_rows, last));
  return LinearOver(b, last, weights_->lm_head(), no_bias, logits_.View(DType::kF32, n_logits, z.vocab));
}

absl::StatusOr<ModelRunner::Output> ModelRunner::SampleOnDevice(TensorView logits, std::span<const SampleRequest> samples) {
  // Requests up, one id per request back: the logits never leave the device.
  auto* requests = samples_.as<SampleRequest>();
  int32_t* ids = reinterpret_cast<int32_t*>(requests + MaxDeviceSamples());
  KVS_RETURN_IF_ERROR(backend_->CopyToDevice(samples.data(), requests, samples.size_bytes()));
  KVS_RETURN_IF_ERROR(backend_->SampleRows(logits, requests, static_cast<int32_t>(samples.size()), ids));
  KVS_RETURN_IF_ERROR(backend_->CopyToHost(ids, host_ids_.data(), samples.size() * sizeof(int32_t)));
  return Output{{}, {}, std::span<const int32_t>(host_ids_.data(), samples.size())};
}

absl::StatusOr<ModelRunner::Output> ModelRunner::Execute(const StepInput& in, bool greedy_only,
                                                         std::span<const SampleRequest> samples) {
  const ModelConfig& global = weights_->config();
  const Sizes z(*weights_, limits_, tp_.size());
  const int64_t t = in.num_tokens();
  const int32_t s = in.num_seqs();
  const int64_t n_logits = static_cast<int64_t>(in.logit_rows.size());
  // Moves first, beside the ops: each layer's ops wait for that layer's moves (Forward), so a
  // move reads its source before this step's kernels may rewrite it and lands before they read
  // it. Copies read blocks a sibling still holds or that an offloading sequence just gave up; a
  // swap-in may land in the latter.
  const size_t moved_blocks = (in.swap_out.size() + in.copy_blocks.size() + in.swap_in.size()) / 2;
  // Overlap pays from a few blocks on: a per-layer wait costs the step a little even when its
  // blocks have long arrived (docs/performance.md, "Block moves beside the forward pass").
  const bool overlap = limits_.overlap_kv_moves && t > 0 && moved_blocks >= kMinOverlappedMoves;
  if (moved_blocks > 0) {
    KVS_RETURN_IF_ERROR(cache_->QueueMoves(*backend_, in.swap_out, in.copy_blocks, in.swap_in, /*by_layer=*/overlap));
    // Otherwise everything after waits for all of them (the last slot's mark comes after every
    // move); steps without moves then need no waits at all.
    if (!overlap) KVS_RETURN_IF_ERROR(backend_->WaitMoves(cache_->move_slots() - 1));
  }
  if (t == 0) return Output{};
  if (in.positions.size() != static_cast<size_t>(t) || in.num_kv_groups != cache_->groups().num_groups() ||
      !in.GroupArraysConsistent() || in.context_len.size() != static_cast<size_t>(s) ||
      in.residual.size() != (KvChannelQuantized(cache_->dtype()) ? static_cast<size_t>(s) : 0) ||
      in.sealed.size() != in.residual.size() || in.sink.size() != in.residual.size() ||
      in.query_start.size() != static_cast<size_t>(s) + 1 || in.query_start.back() != t ||
      in.max_blocks_per_seq > limits_.max_blocks_per_seq || n_logits > limits_.max_seqs ||
      static_cast<int64_t>(samples.size()) > MaxDeviceSamples()) {
    return absl::InvalidArgumentError("malformed step input");
  }
  for (int32_t tok : in.token_ids) {
    if (tok < 0 || tok >= global.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token id %d is outside the vocabulary (0..%d)", tok, global.vocab_size - 1));
    }
  }
  if (t > z.t || s > z.s || static_cast<int64_t>(in.block_table.size()) > z.blocks) {
    return absl::InvalidArgumentError(absl::StrFormat("step of %d tokens / %d sequences exceeds the runner's %d / %d", t, s,
                                                      z.t, z.s));
  }
  const bool graphed = Graphable(in);
  staged_.clear();
  StepPointers ptr;
  AttentionBatch batch;
  int64_t rows = t;  // tokens the forward pass runs (padded when graphed)
  if (graphed) {
    rows = DecodeBucket(s);
    PackPaddedDecode(in, static_cast<int32_t>(rows), ptr, batch);
  } else {
    const bool staging = PlanStaging(in);
    PackStep(in, staging ? std::span<const int32_t>(table_) : std::span<const int32_t>(in.block_table), ptr, batch);
  }
  KVS_RETURN_IF_ERROR(backend_->CopyToDevice(meta_host_.data(), meta_.data(), meta_host_.size() * sizeof(int32_t)));
  if (graphed) {
    KVS_RETURN_IF_ERROR(RunGraphed(ptr, rows, batch, overlap));
  } else {
    KVS_RETURN_IF_ERROR(Forward(ptr, t, n_logits, batch, overlap));
  }
  Backend& b = *backend_;
  Collectives* comm = tp_.comm;
  const ModelShard& shard = weights_->shard();
  if (n_logits == 0) {
    KVS_RETURN_IF_ERROR(b.Synchronize());
    return Output{};
  }
  // Graphed steps computed padded rows too; the first n_logits rows are this step's.
  const TensorView logits = logits_.View(DType::kF32, n_logits, z.vocab);  // this rank's vocab slice
  const bool root = tp_.rank() == 0;
  if (!samples.empty() && comm == nullptr) return SampleOnDevice(logits, samples);
  if (greedy_only) {
    int32_t* ids = greedy_ids_.as<int32_t>();
    float* values = reinterpret_cast<float*>(ids + n_logits);
    KVS_RETURN_IF_ERROR(b.ArgmaxRows(logits, shard.vocab.begin, ids, comm ? values : nullptr));
    if (comm == nullptr) {
      KVS_RETURN_IF_ERROR(b.CopyToHost(ids, host_ids_.data(), n_logits * sizeof(int32_t)));
      return Output{{}, std::span<const int32_t>(host_ids_.data(), n_logits), {}};
    }
    // Each rank's (id, value) candidates; the best wins, the lowest id on ties (ranks hold
    // ascending vocab ranges), exactly as one argmax over the whole row would pick.
    const size_t bytes = 2 * n_logits * sizeof(int32_t);
    KVS_RETURN_IF_ERROR(comm->AllGather(ids, candidates_.data(), bytes));
    if (!root) return Output{};
    const int64_t per_rank = 2 * n_logits;
    KVS_RETURN_IF_ERROR(b.CopyToHost(candidates_.data(), host_ids_.data(), z.tp * bytes));
    for (int64_t row = 0; row < n_logits; ++row) {
      int32_t best_id = -1;
      float best = 0.0f;
      for (int64_t r = 0; r < z.tp; ++r) {
        const int32_t* block = host_ids_.data() + r * per_rank;
        float value;
        std::memcpy(&value, block + n_logits + row, sizeof(float));
        if (best_id < 0 || value > best) {
          best = value;
          best_id = block[row];
        }
      }
      host_ids_[row] = best_id;
    }
    return Output{{}, std::span<const int32_t>(host_ids_.data(), n_logits), {}};
  }
  const std::span<float> host(host_logits_.data(), n_logits * global.vocab_size);
  if (comm == nullptr) {
    KVS_RETURN_IF_ERROR(b.DownloadFloat(logits, host));
    return Output{std::span<const float>(host), {}, {}};
  }
  // Every rank's slice, padded to the widest, then reassembled row by row on rank 0: on the
  // device when it samples there (one CopyRegions batch), else on the host.
  const size_t slot_bytes = n_logits * z.vocab_slot * sizeof(float);
  KVS_RETURN_IF_ERROR(comm->AllGather(logits.data, gathered_.data(), slot_bytes));
  if (!root) return Output{};
  if (!samples.empty()) {
    std::vector<CopyRegion> pieces;
    for (int64_t r = 0; r < z.tp; ++r) {
      const Range vr = tp_.vocab_by_rank[r];
      const float* block = gathered_.as<float>() + r * n_logits * z.vocab_slot;
      for (int64_t row = 0; row < n_logits; ++row) {
        pieces.push_back({block + row * vr.size(), whole_logits_.as<float>() + row * global.vocab_size + vr.begin,
                          vr.size() * sizeof(float)});
      }
    }
    KVS_RETURN_IF_ERROR(b.CopyRegions(pieces));
    return SampleOnDevice(whole_logits_.View(DType::kF32, n_logits, global.vocab_size), samples);
  }
  KVS_RETURN_IF_ERROR(b.CopyToHost(gathered_.data(), host_gathered_.data(), z.tp * slot_bytes));
  for (int64_t r = 0; r < z.tp; ++r) {
    const Range vr = tp_.vocab_by_rank[r];
    const float* block = host_gathered_.data() + r * n_logits * z.vocab_slot;
    for (int64_t row = 0; row < n_logits; ++row) {
      std::copy(block + row * vr.size(), block + (row + 1) * vr.size(), host.data() + row * global.vocab_size + vr.begin);
    }
  }
  return Output{std::span<const float>(host), {}, {}};
}

}  // namespace kvs
