// Runs the Llama-family forward pass for one step on a Backend:
//   x = embed(tokens)
//   per layer: h = rmsnorm(x); qkv = h Wqkv (+b); rope(q, k); write k, v to pages;
//              a = paged_attention(q); x += a Wo; h = rmsnorm(x); x += swiglu(h Wgu) Wdown
//   logits = rmsnorm(x)[logit_rows] Wlm
// All activations live in workspace buffers allocated once for the largest step.
//
// Under tensor parallelism (collectives.h) each rank runs this on its shard of the weights
// (model_shard.h): the embedding, the O projection and the down projection produce partial sums
// that are all-reduced (three all-reduces per layer would be two without the vocab-parallel
// embedding, which happens once per step); the LM head yields each rank's vocab slice, and
// rank 0 receives the full logits or, for greedy steps, each rank's (max, id) candidate.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/engine/collectives.h"
#include "runtime/sched/step_input.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/model/model_weights.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

struct RunnerLimits {
  int32_t max_tokens_per_step = kDefaultMaxTokensPerStep;
  int32_t max_seqs = kDefaultMaxSeqs;
  int32_t max_blocks_per_seq = 0;
  // Replay decode steps as recorded graphs (CUDA graphs) where the backend can record them:
  // one graph per padded batch size and context-length class (RoundUpContext).
  bool graphs = true;
  // Run KV block moves (swaps, copy-on-write, offload demotion) beside the ops, each layer
  // waiting only for its own, in steps that move at least kMinOverlappedMoves blocks; false makes
  // every step wait for its moves first (for comparison).
  bool overlap_kv_moves = true;
};

class ModelRunner {
 public:
  static absl::StatusOr<ModelRunner> Create(Backend& backend, const ModelWeights& weights,
                                            const KvCache& cache, RunnerLimits limits,
                                            TensorParallel tp = {});
  // Bytes of workspace a runner with these limits allocates (for memory planning).
  static size_t WorkspaceBytes(const ModelWeights& weights, RunnerLimits limits, int tp_size = 1);
  static size_t WorkspaceBytes(const ModelConfig& c, const ModelShard& shard, DType dtype, RunnerLimits limits,
                               int tp_size);

  // What a step hands back for sampling, on the host: the logits [rows, vocab]; or, when every
  // sampled row is greedy, just the argmax of each row; or, when the step came with sample
  // requests, the token drawn for each — both picked on the backend. Empty on ranks other than
  // 0 of a tensor-parallel group.
  struct Output {
    std::span<const float> logits;
    std::span<const int32_t> greedy_ids;
    std::span<const int32_t> sampled_ids;
  };
  // How many sample requests one step can take on the backend (under tensor parallelism rank 0
  // first assembles whole rows from every rank's vocabulary slice, on the device).
  int32_t MaxDeviceSamples() const { return 2 * limits_.max_seqs; }
  // Runs one step. With `samples` (at most MaxDeviceSamples()), tokens are drawn on the backend
  // and the logits stay there.
  absl::StatusOr<Output> Execute(const StepInput& input, bool greedy_only = false,
                                 std::span<const SampleRequest> samples = {});

  const RunnerLimits& limits() const { return limits_; }
  // Decode steps replayed from a recorded graph so far.
  int64_t graph_replays() const { return graph_replays_; }
  // Offloaded blocks staged into the device window so far (one per block per step, all layers).
  int64_t staged_blocks() const { return staged_blocks_; }

 private:
  ModelRunner() = default;
  // Where the packed step metadata lives on the backend.
  struct StepPointers {
    const int32_t* token_ids = nullptr;
    const int32_t* positions = nullptr;
    const int32_t* slots = nullptr;  // KV group g's at slots + g * slot_stride
    const int32_t* logit_rows = nullptr;
    int64_t slot_stride = 0;
    int64_t table_stride = 0;  // KV group g's block table at AttentionBatch::block_table + g * this
  };
  static constexpr size_t kMaxGraphs = 128;
  // Steps moving fewer blocks queue them whole, before the forward pass.
  static constexpr size_t kMinOverlappedMoves = 8;

  // Appends `v` to the host copy of the metadata; returns where it will be on the backend.
  const int32_t* Pack(std::span<const int32_t> v);
  void PackStep(const StepInput& in, std::span<const int32_t> block_table, StepPointers& ptr, AttentionBatch& batch);
  // Fills staged_ with the offloaded blocks of this step's prefill sequences and table_ with the
  // step's block table pointing those sequences at the blocks' window copies; false (nothing to
  // stage) leaves both empty.
  bool PlanStaging(const StepInput& in);
  // A pure decode step padded to `rows` sequences, laid out identically for every such step.
  void PackPaddedDecode(const StepInput& in, int32_t rows, StepPointers& ptr, AttentionBatch& batch);
  bool Graphable(const StepInput& in) const;
  int32_t DecodeBucket(int32_t s) const;
  // Block-table width of graphed steps whose longest context rounds up to `context_class`.
  int32_t GraphTableWidth(int32_t context_class) const;
  // The forward pass for `t` tokens up to this rank's logits of `n_logits` rows; with
  // `wait_moves`, each layer's ops first wait for that layer's block moves.
  absl::Status Forward(const StepPointers& ptr, int64_t t, int64_t n_logits, const AttentionBatch& batch,
                       bool wait_moves);
  // Draws `samples` from `logits` (whole vocabulary rows) with Backend::SampleRows.
  absl::StatusOr<Output> SampleOnDevice(TensorView logits, std::span<const SampleRequest> samples);
  // Forward through the graph recorded for this padded shape, recording it on first use.
  // Steps with block moves replay a graph of their own that holds the per-layer waits (each a
  // graph node that costs time even when nothing moved).
  absl::Status RunGraphed(const StepPointers& ptr, int64_t rows, const AttentionBatch& batch, bool wait_moves);

  Backend* backend_ = nullptr;
  const ModelWeights* weights_ = nullptr;
  const KvCache* cache_ = nullptr;
  RunnerLimits limits_;
  TensorParallel tp_;
  // Activations.
  DeviceBuffer hidden_, residual_, normed_, qkv_, attn_, gate_up_, act_, last_, logits_;
  // Tensor parallel only: every rank's logits slice or greedy candidates, gathered.
  DeviceBuffer gathered_, candidates_;
  DeviceBuffer whole_logits_;  // rank 0: [max_seqs, vocab] rows assembled from the slices
  std::vector<float> host_gathered_;
  // Step metadata (token ids, positions, slots, offsets, block table, logit rows), packed on the
  // host and sent in one copy per step.
  DeviceBuffer meta_;
  std::vector<int32_t> meta_host_;
  bool graphs_enabled_ = false;
  absl::flat_hash_map<uint64_t, std::unique_ptr<RecordedOps>> graphs_;
  int64_t graph_replays_ = 0;
  // Offload staging (KvCache::StageOffloaded) for the step being run.
  std::vector<int32_t> staged_, table_;
  int64_t staged_blocks_ = 0;
  DeviceBuffer greedy_ids_;
  DeviceBuffer samples_;  // [MaxDeviceSamples()] requests, then their ids
  std::vector<int32_t> host_ids_;
  std::vector<float> host_logits_;
  int64_t vocab_slot_ = 0;  // the widest rank's vocab slice: each rank's gathered row pitch
};

}  // namespace kvs
