// BackendOps: the op set a Llama-family forward pass needs, with the formats each backend
// takes (KV dtypes, GGML weight blocks). Part of Backend (kernels/backend.h); a new op touches
// this interface and its implementations only.
//
// Ops are stream-ordered (BackendQueue) and validate dtypes and shapes, returning
// InvalidArgument on a mismatch; they never allocate, so a forward pass runs entirely in buffers
// sized at start-up (ReserveWorkspace).
//
// Shapes use T = tokens in the step, D = head_dim, Hq / Hk = query / KV heads, K = input
// features, N = output features, V = vocabulary, I = intermediate (FFN) size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/common/ggml_types.h"
#include "kernels/common/paged_kv.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/sample_request.h"
#include "kernels/tensor_view.h"

namespace kvs {

// Rotary embedding parameters: per-pair inverse frequencies (already scaled for Llama-3.1 /
// linear rope scaling) in backend memory, [D/2] floats. HF "rotate_half" pairing: element d
// pairs with d + D/2.
struct RopeTable {
  const float* inv_freq = nullptr;
  int32_t head_dim = 0;
};

class BackendOps {
 public:
  virtual ~BackendOps() = default;

  // "cpu", "cuda:0 (NVIDIA H200)": for messages and logs.
  virtual std::string Name() const = 0;
  // Element type used for weights and activations by this backend (f32 on CPU).
  virtual DType ComputeDType() const = 0;
  // Why WriteKv and PagedAttention would refuse caches of format `t` with heads of `head_dim`,
  // naming what the backend supports; empty when they accept them. KvCache::Create asks at load,
  // so a model the kernels cannot run is refused before its first request. The default KV format
  // is the compute dtype's (DefaultKvDType).
  virtual std::string KvDTypeProblem(KvDType t, int32_t head_dim) const = 0;
  bool SupportsKvDType(KvDType t, int32_t head_dim) const { return KvDTypeProblem(t, head_dim).empty(); }
  // Why PagedAttention would refuse a windowed cache (PagedKvView::window > 0) of format `t` and
  // `head_dim`; empty when it takes one. Asked at load for models with sliding-window layers.
  virtual std::string AttentionWindowProblem(KvDType t, int32_t head_dim) const { return ""; }
  KvDType DefaultKvDType() const {
    const DType c = ComputeDType();
    return c == DType::kF32 ? KvDType::kF32 : c == DType::kF16 ? KvDType::kF16 : KvDType::kBF16;
  }

  // Sizes scratch space that ops use (e.g. split-K attention partials) for steps of up to
  // `max_tokens` tokens and `max_seqs` sequences; called once at start-up so ops never allocate.
  virtual absl::Status ReserveWorkspace(int64_t max_tokens, int32_t max_seqs, int32_t q_heads, int32_t head_dim) {
    return absl::OkStatus();
  }
  // Sizes the scratch into which a backend may decode a quantized cache's pages before prefill
  // attention (the CUDA backend on compute capability 9.0, for fp8/int8/int4 caches: a prompt
  // step's whole context, up to `max_context` positions of one sequence). Called once at start-up,
  // after ReserveWorkspace. Memory it cannot get only costs speed: prefill then decodes in the
  // attention kernel, and the backend logs it once.
  virtual absl::Status ReservePrefillKvScratch(KvDType dtype, int32_t block_size, int32_t kv_heads, int32_t head_dim,
                                               int64_t max_context) {
    return absl::OkStatus();
  }

  // Fills contiguous `dst` with mean + half_range * UniformSigned(seed, i) (random_fill.h), the
  // same values on every backend; used for synthetic models. `window` maps dst's elements to
  // their index i in the whole tensor when dst is a slice of it.
  virtual absl::Status FillRandom(TensorView dst, uint64_t seed, float mean, float half_range,
                                  RandomWindow window = {}) = 0;
  // out = rows of GGML-typed weights (kernels/common/ggml_types.h) decoded to out's dtype, so
  // that quantized files travel to the device in their stored size. src: backend memory, row r
  // at src + r * src_stride bytes; out [rows, cols] contiguous, cols a multiple of the type's
  // block. Values equal DequantizeToF32's (then rounded to out's dtype).
  virtual absl::Status Dequantize(GgmlType type, const void* src, int64_t src_stride, TensorView out) = 0;
  // Whether Dequantize takes `type`; weights of other GGML types reach the backend decoded to
  // float32 on the host (runtime/model/model_weights.cc).
  virtual bool DequantizesType(GgmlType type) const = 0;
  // Rows of GGML-typed blocks just copied into backend memory as stored (`rows` rows of `cols`
  // elements, contiguous) rearranged, in place, into the layout this backend's Linear and
  // Embedding read; every copy of weights kept as blocks goes through it once before any op reads
  // them. The CUDA backend splits F8_E4M3 rows into their codes, then their scales, so that
  // cuBLASLt's FP8 GEMM reads the codes where they lie, and GGML rows (all types but Q8_K) into
  // their blocks' codes, then their scales, so that its GEMV's lanes load contiguous bytes
  // (kernels/cuda/ggml_unit.cuh); the others keep every type as stored.
  virtual absl::Status ArrangeBlocks(GgmlType type, void* data, int64_t rows, int64_t cols) { return absl::OkStatus(); }
  // Whether Linear and Embedding take weights of GGML `type` as stored (dtype kBlocks, rows of
  // whole blocks), so that ModelWeights keeps them so; false: they are decoded at load.
  virtual bool LinearTakesBlocks(GgmlType type) const { return false; }

  // --- ops ---
  // Dtypes: weights and matmul activations are ComputeDType(); the residual stream (Embedding's
  // output, AddRmsNorm's `residual`) and the logits (Linear's `out` for the LM head) are f32 on
  // every backend, so long residual sums and sampling do not lose precision.
  //
  // out[t] = table[ids[t] - first_id]. ids: [T] int32 in backend memory; table [V', K] holds the
  // rows of ids [first_id, first_id + V'); out [T, K] (f32). Ids outside that range give zero
  // rows: a vocab-parallel embedding whose ranks' outputs are summed.
  virtual absl::Status Embedding(const int32_t* ids, TensorView table, int32_t first_id, TensorView out) = 0;
  // out = x / rms(x) * weight, per row. x, out [T, K]; weight [1, K]. out may be x (in place).
  virtual absl::Status RmsNorm(TensorView x, TensorView weight, float eps, TensorView out) = 0;
  // The same over each head of x [T, heads * D], in place, with one weight [1, D] for every head:
  // Qwen3's and Gemma 3's q/k norms, before rope.
  virtual absl::Status HeadRmsNorm(TensorView x, int32_t heads, TensorView weight, float eps) = 0;
  // x *= s, in place (f32): Gemma's embedding scale on the residual stream.
  virtual absl::Status Scale(TensorView x, float s) = 0;
  // residual += x; out = RmsNorm(residual). Fused so the residual is read once.
  virtual absl::Status AddRmsNorm(TensorView residual, TensorView x, TensorView weight, float eps, TensorView out) = 0;
  // out = x * w^T (+ bias). x [T, K]; w [N, K]; bias [1, N] or null data; out [T, N].
  virtual absl::Status Linear(TensorView x, TensorView w, TensorView bias, TensorView out) = 0;
  // In-place rotary embedding on x [T, heads * D] at positions[T] (int32, backend memory).
  virtual absl::Status Rope(TensorView x, int32_t heads, const int32_t* positions, RopeTable rope) = 0;
  // Stores token t's K/V rows into slot slot_mapping[t] of the paged cache, encoded in the
  // cache's KvDType (quantized formats compute their scales here). k, v [T, Hk * D]. A slot
  // s <= -2 is residual slot -(s + 2), in bf16 (channel-quantized caches, paged_kv.h); -1: none.
  virtual absl::Status WriteKv(TensorView k, TensorView v, const int32_t* slot_mapping, PagedKvView cache) = 0;
  // Rope over qk [T, heads * D] (query heads, then the KV heads: k is its last cache.kv_heads
  // heads), then WriteKv of the rotated k and v: one call, so that a backend may do both in one
  // pass (CUDA, for bf16 and fp16 caches). Not for channel-quantized caches, whose SealKvGroups
  // comes between the two.
  virtual absl::Status RopeWriteKv(TensorView qk, int32_t heads, const int32_t* positions, RopeTable rope, TensorView k,
                                   TensorView v, const int32_t* slot_mapping, PagedKvView cache) {
    if (absl::Status s = Rope(qk, heads, positions, rope); !s.ok()) return s;
    return WriteKv(k, v, slot_mapping, cache);
  }
  // Channel-quantized caches (KvChannelQuantized): writes each block that this step completes,
  // whole — keys per channel, values per token — from the step's rows k, v [T, Hk * D] (laid
  // out as `batch`'s query rows) and, for its positions before the step, the sequence's residual
  // block (batch.residual). Runs before the step's WriteKv, which may reuse those residual rows.
  virtual absl::Status SealKvGroups(TensorView k, TensorView v, const AttentionBatch& batch, PagedKvView cache) {
    return absl::UnimplementedError(Name() + " backend: no channel-quantized KV (int4 / int2)");
  }
  // Causal attention of q [T, Hq * D] over the paged cache; out [T, Hq * D]. GQA: query head h
  // reads KV head h / (Hq / Hk). Quantized caches are decoded inside the kernel. A cache with a
  // window (PagedKvView::window > 0: a sliding-window layer) lets the query at position p see
  // keys p - window + 1 .. p only.
  virtual absl::Status PagedAttention(TensorView q, PagedKvView cache, const AttentionBatch& batch, float scale,
                                      TensorView out) = 0;
  // out = silu(gate) * up, where gate_up [T, 2I] holds gate in columns [0, I) and up in [I, 2I).
  virtual absl::Status SwiGlu(TensorView gate_up, TensorView out) = 0;
  // out = gelu_tanh(gate) * up (GeGLU, Gemma's gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x +
  // 0.044715 x^3)))), same layout as SwiGlu.
  virtual absl::Status GeluGlu(TensorView gate_up, TensorView out) = 0;
  // out = act(x w_gate^T) * (x w_up^T) in one pass where the backend has one for these operands
  // (w: an MLP's [2I, hidden] gate_up matrix in one storage type; act: gelu_tanh where `gelu`,
  // else silu), with the bits of Linear then SwiGlu / GeluGlu. False: not taken, nothing written
  // (run those two). The CUDA backend takes one token of bf16 or F8_E4M3 weights (its batch-1
  // GEMVs); the CPU backend never does.
  virtual absl::StatusOr<bool> GatedLinear(TensorView x, TensorView w, bool gelu, TensorView out) { return false; }
  // ids[r] = first_id + argmax of logits row r (lowest index on ties), values[r] = that maximum
  // (values may be null): greedy sampling without moving the logits; with a vocab-parallel LM
  // head each rank's (value, id) pair is its candidate. logits [n, V] f32; ids, values: [n] in
  // backend memory.
  virtual absl::Status ArgmaxRows(TensorView logits, int32_t first_id, int32_t* ids, float* values) = 0;
  // ids[i] = the token drawn for requests[i] from its logits row (sampling rule: kernels/cpu/
  // sampling.h), so that sampling needs no logits on the host. logits [n, V] f32; requests and
  // ids: [count] in backend memory; a request naming a row outside logits gets id -1.
  virtual absl::Status SampleRows(TensorView logits, const SampleRequest* requests, int32_t count, int32_t* ids) = 0;
  // out[i] = x[rows[i]]; rows: [n] int32 in backend memory; out [n, K].
  virtual absl::Status GatherRows(TensorView x, const int32_t* rows, TensorView out) = 0;
};

}  // namespace kvs
