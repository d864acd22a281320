// Launchers for the CUDA kernels: raw device pointers in, the whole launch configuration
// computed here, cudaError_t out (the launch error; execution errors surface at the next sync).
// Element types: `bf16` activations and weights, float residual and logits. Shapes as in
// kernels/backend.h; strides in elements. Every launcher is stream-ordered on `stream`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/copy_region.h"
#include "kernels/common/ggml_types.h"
#include "kernels/common/paged_kv.h"
#include "kernels/common/sample_request.h"

namespace kvs::cuda {

using bf16 = __nv_bfloat16;

// out[t, :] = float(table[ids[t], :]).  table [V, K] bf16; out [T, K] f32.
cudaError_t LaunchEmbedding(const int32_t* ids, int64_t num_tokens, const bf16* table, int32_t first_id,
                            int64_t table_rows, int64_t hidden, float* out, int64_t out_stride, cudaStream_t stream);

// Activations rounded to int8 per 32 for the block GEMV (block_linear.cu): q [T, K]; per 32 the
// scale d [T, K / 32]; per 16 the scale times the sum of the codes, sum16 [T, K / 16].
struct QuantizedActivations {
  int8_t* q = nullptr;
  float* d = nullptr;
  float* sum16 = nullptr;
};
// Most tokens the block GEMV takes at once; up to kBlockGemmMaxTokens the block GEMM can take (int8
// tensor cores on the blocks, block_gemm.cu; BlockGemmPath says up to how many it does); more go
// through bf16 tiles and cuBLAS, which read each weight once per 32 MiB tile however many tokens.
inline constexpr int64_t kBlockGemvMaxTokens = 8;
inline constexpr int64_t kBlockGemmMaxTokens = 128;

// Whether the RMSNorm kernels give a launch of many rows (a prompt) the fewest threads a row that
// hold it, where a decode step's few rows keep 512 (rms_norm.cu). On by default (the 65,536-token
// prompt 0.5-0.9% faster on an H100, docs/performance.md); process-wide, for tests and benchmarks;
// KVS_NORM_ROW_THREADS=512 keeps 512 at every row count. Reset: back to the default.
void SetNormRowThreadsFewest(bool fewest);
void ResetNormRowThreads();

// out = bf16(x / rms(x) * w).  x [T, K] f32; w [K] bf16; out [T, K] bf16.
// round (may be null; room for `rows` rows of K): out also rounded into it for the block GEMV (in
// its order), as LaunchQuantizeActivations would round it, where the kernel can (K a multiple of 32,
// aligned rows): *rounded says whether it did.
cudaError_t LaunchRmsNorm(const float* x, int64_t x_stride, const bf16* w, int64_t rows, int64_t cols, float eps,
                          bf16* out, int64_t out_stride, cudaStream_t stream,
                          const QuantizedActivations* round = nullptr, bool* rounded = nullptr);

// residual += float(x); out = bf16(residual / rms(residual) * w).  residual f32, x bf16, out bf16.
// round, rounded: as LaunchRmsNorm's.
cudaError_t LaunchAddRmsNorm(float* residual, int64_t res_stride, const bf16* x, int64_t x_stride, const bf16* w,
                             int64_t rows, int64_t cols, float eps, bf16* out, int64_t out_stride, cudaStream_t stream,
                             const QuantizedActivations* round = nullptr, bool* rounded = nullptr);

// out = bf16(x / rms(x) * w) over rows of `dim` bf16: row (t, h) at x + t * x_stride + h * dim
// (and the same in out), t < rows, h < heads. w [dim] bf16. out may be x. One warp per row: the
// q/k norms of Qwen3 and Gemma 3 (heads of D) and Gemma's post-attention / post-MLP norms (one
// head of `hidden`).
cudaError_t LaunchRmsNormBf16(const bf16* x, int64_t x_stride, int64_t rows, int32_t heads, int32_t dim,
                              const bf16* w, float eps, bf16* out, int64_t out_stride, cudaStream_t stream);

// x *= s over [rows, cols] f32.
cudaError_t LaunchScale(float* x, int64_t x_stride, int64_t rows, int64_t cols, float s, cudaStream_t stream);

// In-place rotary embedding (HF rotate_half pairing) on x [T, heads * D] bf16.
cudaError_t LaunchRope(bf16* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream);

// LaunchRope over qk [T, heads * D] (query heads, then the cache's kv_heads), and then what
// LaunchWriteKv would store of its last kv_heads heads (rotated) and v, in one kernel: bf16 and
// fp16 caches (cudaErrorInvalidValue for the others, or a head_dim other than the cache's).
cudaError_t LaunchRopeWriteKv(bf16* qk, int64_t qk_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
                              const int32_t* positions, const float* inv_freq, const bf16* v, int64_t v_stride,
                              const int32_t* slot_mapping, const PagedKvView& cache, cudaStream_t stream);

// cache[slot_mapping[t]] = k/v[t] for the layer's paged cache, encoded in cache.dtype (bf16 any
// head dim; fp16/fp8/int8/int4-token head_dim 64 or 128). Negative slots skip, except that a
// channel-quantized cache (int4 / int2) takes slots <= -2 as rows of its bf16 residual rings and
// writes nothing else (its blocks are written whole by LaunchSealKvGroups).
cudaError_t LaunchWriteKv(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                          int64_t num_tokens, const int32_t* slot_mapping, const PagedKvView& cache,
                          cudaStream_t stream);

// Backend::SealKvGroups for int4 / int2 caches: each block the step completes, quantized whole
// from the step's rows k, v [T, Hk * D] and the sequences' residual rings, byte for byte as the
// CPU encoder writes it (kivi_seal.cu).
cudaError_t LaunchSealKvGroups(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                               const AttentionBatch& batch, const PagedKvView& cache, cudaStream_t stream);

// out[t, i] = bf16(silu(gu[t, i]) * gu[t, I + i]). round, rounded: as LaunchRmsNorm's (I a
// multiple of 32).
cudaError_t LaunchSwiGlu(const bf16* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, bf16* out,
                         int64_t out_stride, cudaStream_t stream, const QuantizedActivations* round = nullptr,
                         bool* rounded = nullptr);

// out[t, i] = bf16(gelu_tanh(gu[t, i]) * gu[t, I + i]) (Gemma's GeGLU). round, rounded: as SwiGLU's.
cudaError_t LaunchGeluGlu(const bf16* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, bf16* out,
                          int64_t out_stride, cudaStream_t stream, const QuantizedActivations* round = nullptr,
                          bool* rounded = nullptr);

// out[i, :] = x[rows[i], :] for `elem_bytes`-sized elements.
cudaError_t LaunchGatherRows(const void* x, int64_t x_stride, const int32_t* rows, int64_t n, int64_t cols,
                             int32_t elem_bytes, void* out, int64_t out_stride, cudaStream_t stream);

// out[t, n] += bias[n] (bf16 or f32 out).
cudaError_t LaunchAddBias(bf16* out, int64_t out_stride, int64_t rows, int64_t cols, const bf16* bias,
                          cudaStream_t stream);
cudaError_t LaunchAddBiasF32(float* out, int64_t out_stride, int64_t rows, int64_t cols, const bf16* bias,
                             cudaStream_t stream);

// dst[i] = mean + half_range * UniformSigned(seed, i), as bf16 or f32 (kernels/common/random_fill.h).
cudaError_t LaunchFillRandom(void* dst, bool bf16_out, int64_t rows, int64_t cols, uint64_t seed, float mean,
                             float half_range, int64_t first_index, int64_t index_row_stride, cudaStream_t stream);

// Copies every region of `table` (device memory, `count` entries; each region 16-byte aligned
// and a whole number of 16-byte words, in device or mapped pinned host memory).
// At most `max_blocks` blocks (0: as many as the regions need), a warp per region at a time.
cudaError_t LaunchCopyRegions(const CopyRegion* table, int64_t count, cudaStream_t stream, int max_blocks = 0);

// Whether LaunchDequantize decodes `type`: every GGML type kvshard knows (ggml_types.h).
constexpr bool DequantizeSupports(GgmlType type) { return LookupGgmlType(static_cast<uint32_t>(type)).has_value(); }
// out [rows, cols] (bf16, or f32 when f32_out) = GGML-typed rows at src (row r at src + r *
// src_stride bytes) decoded; cols a multiple of the type's block. LaunchDequantize reads rows as
// stored in the file; LaunchDequantizeKept rows of kept weights, in the layout the backend keeps
// them in (LaunchSplitRows, LaunchF8ArrangeRows).
cudaError_t LaunchDequantize(GgmlType type, const void* src, int64_t src_stride, int64_t rows, int64_t cols, void* out,
                             bool f32_out, cudaStream_t stream);
cudaError_t LaunchDequantizeKept(GgmlType type, const void* w, int64_t row_bytes, int64_t rows, int64_t cols, void* out,
                                 bool f32_out, cudaStream_t stream);

// a = x [tokens, k] (bf16, rows x_stride apart) rounded; k a multiple of 32. gemv_order: q in the
// order LaunchBlockGemv reads (block_linear.cu's CodeOffset), else in unit order (the block GEMM's).
cudaError_t LaunchQuantizeActivations(const bf16* x, int64_t x_stride, int64_t tokens, int64_t k,
                                      QuantizedActivations a, bool gemv_order, cudaStream_t stream);
// How many times LaunchQuantizeActivations has launched in this process (tests check that a
// producer's rounding spared the Linear its own).
int64_t ActivationRoundingsLaunched();

// Whether the one-token GEMV over narrow rows (four warps a row) walks several of a block's row
// groups at once where the rows outnumber its grid (block_linear.cu's BlockGemvGroupsKernel: Q4_0,
// Q4_1, Q5_0, Q5_1; the same bits). On by default; process-wide, for tests and benchmarks;
// KVS_GEMV_GROUPS=off starts it off.
// GemvGroupsInFlightLaunched counts such launches.
void SetGemvGroupsInFlight(bool on);
void ResetGemvGroupsInFlight();
int64_t GemvGroupsInFlightLaunched();

// out[t, j] = a[t] . w[j] for t < tokens (1 .. kBlockGemvMaxTokens), j < n, a in the GEMV's order. w:
// n rows of kept GGML weights `row_bytes` apart, k weights each; out bf16, or f32 when f32_out.
cudaError_t LaunchBlockGemv(GgmlType type, const void* w, int64_t row_bytes, int64_t n, int64_t k,
                            QuantizedActivations a, int64_t tokens, void* out, int64_t out_stride, bool f32_out,
                            cudaStream_t stream);
// Kept weights of every GGML type but Q8_K (SplitsRows) are split rows in device memory
// (ggml_unit.cuh's Parts: each row's payloads, its codes, then its headers, its scales, in the same
// bytes): LaunchSplitRows rearranges `rows` stored rows of k weights in place, once at load, and
// every launch below but LaunchDequantize (the loader's, of rows as stored) reads them so. Q8_K is
// kept as stored (LaunchSplitRows leaves it).
inline constexpr int kSplitRowsMaxRowBytes = 227 * 1024;  // a row staged whole in shared memory
bool SplitsRows(GgmlType type);
cudaError_t LaunchSplitRows(GgmlType type, void* w, int64_t rows, int64_t k, cudaStream_t stream);
// The rearrangement itself, for any block of `header` + `payload` bytes whose payload is the run at
// payload_at (every part a whole number of 2-byte halves): each row's payloads, then its headers.
// LaunchSplitRows and LaunchF8ArrangeRows are its two users.
cudaError_t LaunchSplitRowParts(void* w, int64_t row_bytes, int64_t rows, int64_t blocks, int header, int payload_at,
                                int payload, cudaStream_t stream);
// LaunchEmbedding for a table kept in GGML blocks (rows `row_bytes` apart): rows decoded as the
// CPU decoder decodes them; ids outside [first_id, first_id + table_rows) give zero rows.
cudaError_t LaunchEmbeddingBlocks(GgmlType type, const int32_t* ids, int64_t tokens, const void* table,
                                  int64_t row_bytes, int32_t first_id, int64_t table_rows, int64_t hidden, float* out,
                                  int64_t out_stride, cudaStream_t stream);

// The GEMV's contract for kBlockGemvMaxTokens < tokens <= kBlockGemmMaxTokens, on int8 tensor cores
// (block_gemm.cu): the same activations (LaunchQuantizeActivations) and the same arithmetic. Split
// along k where the matrix alone would not fill the GPU, each split's f32 sums in `scratch` (up to
// scratch_floats; nullptr: no split), added in split order by a second kernel.
cudaError_t LaunchBlockGemm(GgmlType type, const void* w, int64_t row_bytes, int64_t n, int64_t k,
                            QuantizedActivations a, int64_t tokens, void* out, int64_t out_stride, bool f32_out,
                            float* scratch, int64_t scratch_floats, cudaStream_t stream);
// How Linear multiplies weights in blocks beyond the GEMV's tokens. kAuto: GGML types through the
// block GEMM up to kBlockGemmAutoMaxTokens, bf16 tiles for cuBLAS beyond (per layer the block GEMM
// measured 1.2-1.7x faster than the tiles at 32 tokens and 1.4-2.7x slower at 128 on an H200:
// docs/performance.md); F8_E4M3 on FP8 tensor cores (f8_gemm.h) where cuBLASLt has an algorithm.
// kBf16Tiles: everything through the tiles; kInt8TensorCores: GGML types through the block GEMM up
// to kBlockGemmMaxTokens. KVS_BLOCK_GEMM=bf16-tiles or int8-mma in the environment starts a process
// with either. Process-wide.
inline constexpr int64_t kBlockGemmAutoMaxTokens = 32;
enum class BlockGemmPath { kAuto, kBf16Tiles, kInt8TensorCores };
void SetBlockGemmPath(BlockGemmPath path);
bool UseBlockGemm(int64_t tokens);  // GGML types, `tokens` past the GEMV's: through the block GEMM
// The block GEMM at 9-32 tokens with the next chunk's loads in flight during this one's MMAs
// (block_gemm.cu's PipelinedBlockGemmKernel): on by default for every type but Q8_0;
// KVS_BLOCK_GEMM_PIPELINE=off (or false here) keeps the one-stage kernel. Process-wide.
void SetBlockGemmPipelined(bool on);
bool UseF8TensorCores();  // F8_E4M3 through cuBLASLt's FP8 GEMM

// bf16 weights at batch-1 decode (bf16_gemv.cu): out[t, j] = x[t] . w[j] for t < tokens (1 ..
// kBf16GemvMaxTokens: more tied or lost to cuBLAS), w [n, k] contiguous, products and sums in f32;
// out bf16, or f32 when f32_out. Takes k a multiple of 8, w and x 16-byte aligned, x_stride a multiple of 8
// (cudaErrorInvalidValue otherwise); Bf16GemvTakes says whether Linear should launch it for such
// operands: the shape fits and the GEMV is on (KVS_BF16_GEMV=cublas in the environment, or
// SetBf16GemvOn(false), keeps cuBLAS for every shape: measurement and tests). Process-wide.
inline constexpr int64_t kBf16GemvMaxTokens = 1;
void SetBf16GemvOn(bool on);
bool Bf16GemvTakes(const void* w, int64_t n, int64_t k, const void* x, int64_t x_stride, int64_t tokens);
cudaError_t LaunchBf16Gemv(const bf16* w, int64_t n, int64_t k, const bf16* x, int64_t x_stride, int64_t tokens,
                           void* out, int64_t out_stride, bool f32_out, cudaStream_t stream);

// The gated activations of an MLP (gated_activation.cuh): silu (SwiGLU) or gelu_tanh (GeGLU).
enum class GatedActivation { kSilu, kGeluTanh };
// One token through an MLP's bf16 gate_up matrix w [2 inter, k] and its gated activation in one
// kernel: out[i] = bf16(act(g_i) * u_i) with g_i = bf16(x . w[i]), u_i = bf16(x . w[inter + i]) —
// the bits of LaunchBf16Gemv then LaunchSwiGlu / LaunchGeluGlu; out [inter]. Takes what
// LaunchBf16Gemv takes at one token. (F8_E4M3 weights keep the two kernels: the same fusion of
// the F8 GEMV made an H100's batch-1 step 0.8% slower, docs/performance.md.)
cudaError_t LaunchBf16GatedGemv(const bf16* w, int64_t inter, int64_t k, const bf16* x, GatedActivation act, bf16* out,
                                cudaStream_t stream);
// Whether CudaBackend::GatedLinear takes its shapes: kGatedGemvByDefault, unless KVS_GATED_GEMV=off
// (or =on) in the environment or SetGatedGemvOn says otherwise (off: Linear then SwiGlu / GeluGlu;
// measurement and tests). Process-wide.
inline constexpr bool kGatedGemvByDefault = true;
void SetGatedGemvOn(bool on);
bool GatedGemvOn();

// kvshard's F8_E4M3 blocks (f8_linear.cu). In device memory the CUDA backend keeps them as split
// rows (LaunchF8ArrangeRows, once at load: each row's k codes, then its k / 128 f32 scales, in the
// same row_bytes), which every launch below reads but LaunchF8Dequantize with split_rows false.
cudaError_t LaunchF8ArrangeRows(void* w, int64_t row_bytes, int64_t rows, int64_t k, cudaStream_t stream);
// The GEMV of LaunchBlockGemv with bf16 activations x [tokens, k] as they are (rows x_stride
// elements apart, 8-byte aligned); k whole blocks.
cudaError_t LaunchF8Gemv(const void* w, int64_t row_bytes, int64_t n, int64_t k, const bf16* x, int64_t x_stride,
                         int64_t tokens, void* out, int64_t out_stride, bool f32_out, cudaStream_t stream);
// The operands of an FP8 tensor-core GEMM (f8_gemm.h) with 1 x 128 block scales: the weights'
// codes are the split rows themselves (row_bytes apart); their scales gathered to
// [k / 128][rows]; activations x [tokens, k] bf16 quantized per token and 128 columns to codes
// [tokens][k] and scales [k / 128][tokens] (scale = the block's max |x| / 448).
cudaError_t LaunchF8GatherScales(const void* w, int64_t row_bytes, int64_t rows, int64_t k, float* scales,
                                 cudaStream_t stream);
cudaError_t LaunchF8QuantizeActivations(const bf16* x, int64_t x_stride, int64_t tokens, int64_t k, uint8_t* codes,
                                        float* scales, cudaStream_t stream);
// Rows decoded to bf16 or f32: split rows (the kept weights), or the file's blocks
// (split_rows false: LaunchDequantize, which the loader gives rows it copied as stored); and the
// embedding lookup of LaunchEmbeddingBlocks over split rows.
cudaError_t LaunchF8Dequantize(const void* src, int64_t src_stride, int64_t rows, int64_t cols, void* out, bool f32_out,
                               bool split_rows, cudaStream_t stream);
cudaError_t LaunchF8Embedding(const int32_t* ids, int64_t tokens, const void* table, int64_t row_bytes,
                              int32_t first_id, int64_t table_rows, int64_t hidden, float* out, int64_t out_stride,
                              cudaStream_t stream);

// ids[r] = argmax over logits row r (lowest index on ties). logits [n, V] f32.
cudaError_t LaunchArgmaxRows(const float* logits, int64_t stride, int64_t rows, int64_t cols, int32_t first_id,
                             int32_t* ids, float* values, cudaStream_t stream);

// ids[i] = the token drawn for requests[i] (rule: kernels/common/sampling.h), -1 for a row outside
// [0, rows). logits [rows, cols] f32; requests, ids [count] in device memory.
cudaError_t LaunchSampleRows(const float* logits, int64_t stride, int32_t rows, int32_t cols,
                             const SampleRequest* requests, int32_t count, int32_t* ids, cudaStream_t stream);

// Scratch for split-K attention: partial outputs of up to `max_splits` key ranges.
struct AttentionWorkspace {
  float* partial_out = nullptr;  // [splits, T, Hq, D]
  float* partial_ml = nullptr;   // [splits, T, Hq, 2]: running max (log2 domain) and sum
  int64_t capacity_floats = 0;   // size of partial_out
  int32_t num_sms = 132;
  // Where prefill steps over an fp8/int8/int4 cache decode the keys and values they attend to
  // before the Hopper kernel runs (PrefillKvScratchBytes); nullptr / 0: none reserved.
  void* kv_scratch = nullptr;
  int64_t kv_scratch_bytes = 0;
};

// Bytes of scratch that lets a prefill step over `max_context` positions of one sequence decode an
// fp8/int8/int4-token cache to fp16 first (QuantizedPrefillLoads::kDecodedFirst), or an int4/int2
// cache while KiviPrefillDecodesFirst(); 0 for the other formats and for devices without the
// Hopper prefill kernel. Capped at kMaxPrefillKvScratchBytes:
// longer contexts keep decoding in the kernel's producer warps.
inline constexpr int64_t kMaxPrefillKvScratchBytes = int64_t{512} << 20;
int64_t PrefillKvScratchBytes(KvDType dtype, int32_t block_size, int32_t kv_heads, int32_t head_dim,
                              int64_t max_context);

// The one list of head dims the CUDA attention kernels are compiled for, per KV format: bf16
// caches, and the other (encoded) formats; f32 caches are CPU-only. Dispatch
// (paged_attention_kernels.cuh), CudaBackend::KvDTypeProblem (asked by KvCache::Create at load)
// and the tests read it. Adding a head dim means instantiating it in LaunchAttentionFor.
inline constexpr int32_t kAttentionHeadDims[] = {16, 32, 64, 128};
inline constexpr int32_t kEncodedKvHeadDims[] = {64, 128};
// Sliding-window layers, and bf16 head dims outside kAttentionHeadDims, take the generic kernel
// (paged_attention_window.cu): bf16 caches, head_dim a multiple of 32 up to 256. (It is written for
// fp16 caches too, but that instantiation has not run on a GPU yet, so it is not offered.)
constexpr bool WindowAttentionSupports(KvDType t, int32_t head_dim) {
  return t == KvDType::kBF16 && head_dim % 32 == 0 && head_dim >= 32 && head_dim <= 256;
}
// The channel-quantized formats (int4 / int2: keys per channel, values per token, the newest tokens
// in bf16 rings) have a kernel of their own (paged_attention_kivi.cu), windows included: each lane
// owns head_dim / 32 whole dims of one 32-wide value group, so head_dim / 32 divides 32.
inline constexpr int32_t kKiviHeadDims[] = {32, 64, 128, 256};
constexpr bool KiviAttentionSupports(KvDType t, int32_t head_dim) {
  if (!KvChannelQuantized(t)) return false;
  for (int32_t d : kKiviHeadDims) {
    if (d == head_dim) return true;
  }
  return false;
}
// The tiled kernels (tensor cores): head dims listed above, per format.
constexpr bool TiledAttentionSupports(KvDType t, int32_t head_dim) {
  if (t == KvDType::kF32 || KvChannelQuantized(t)) return false;
  const auto contains = [head_dim](const auto& dims) {
    for (int32_t d : dims) {
      if (d == head_dim) return true;
    }
    return false;
  };
  return t == KvDType::kBF16 ? contains(kAttentionHeadDims) : contains(kEncodedKvHeadDims);
}
// What some kernel takes (without a window): the tiled ones, else the generic one.
constexpr bool AttentionSupports(KvDType t, int32_t head_dim) {
  return TiledAttentionSupports(t, head_dim) || WindowAttentionSupports(t, head_dim) ||
         KiviAttentionSupports(t, head_dim);
}

// Causal attention over the keys of cache.window (all when 0) by the generic kernel; returns
// cudaErrorInvalidValue outside WindowAttentionSupports.
cudaError_t LaunchWindowAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                  const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                  cudaStream_t stream);

// Decode steps over int4 / int2 caches on tensor cores (paged_decode_kivi.cu): one query per
// sequence, head_dim 64 or 128, GQA groups of up to 16 query heads, and a block size that 16-key
// tiles divide (so a tile lies in one block and is sealed or in the ring as a whole). Other steps
// and shapes take the CUDA-core kernel (paged_attention_kivi.cu).
constexpr bool KiviDecodeMmaSupports(KvDType t, int32_t head_dim, int32_t block_size, int32_t group) {
  return KvChannelQuantized(t) && (head_dim == 64 || head_dim == 128) && block_size > 0 && block_size % 16 == 0 &&
         group >= 1 && group <= 16;
}
cudaError_t LaunchKiviDecodeMma(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                const AttentionWorkspace& ws, cudaStream_t stream);
// Which kernel LaunchKiviAttention gives a decode step: kAuto the tensor-core one where
// KiviDecodeMmaSupports, kCudaCores always the CUDA-core one (tests and benchmarks compare them;
// KVS_KIVI_DECODE=cuda-cores in the environment starts a process with it). Process-wide.
enum class KiviDecodeKernel { kAuto, kCudaCores };
void SetKiviDecodeKernel(KiviDecodeKernel kernel);
// Which kernel LaunchKiviAttention gives a prefill step: kDecodedFirst (the default), on the Hopper
// kernel's devices without a window at head_dim 64/128 and where the step's pages fit, decodes them
// to fp16 in the workspace's kv_scratch and runs the fp16 Hopper kernel over them
// (kivi_decoded_first.cu); kCudaCores (KVS_KIVI_PREFILL=cuda-cores) the CUDA-core kernel always.
// Process-wide; PrefillKvScratchBytes reserves scratch for int4/int2 caches only while decoding first.
enum class KiviPrefillKernel { kDecodedFirst, kCudaCores };
void SetKiviPrefillKernel(KiviPrefillKernel kernel);
bool KiviPrefillDecodesFirst();
// Runs such a step when the choice, the shape and the scratch allow it (*ran), else leaves it to
// the caller.
cudaError_t LaunchKiviPrefillDecodedFirst(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                          const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                          const AttentionWorkspace& ws, cudaStream_t stream, bool* ran);

// Causal attention (window included) over an int4 / int2 cache: sealed blocks decoded in
// registers, each sequence's newest keys from its residual ring (AttentionBatch::residual /
// sealed); split along the keys into `ws` when the rows alone would not fill the GPU. Decode
// steps go to LaunchKiviDecodeMma where it applies.
cudaError_t LaunchKiviAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                const AttentionWorkspace& ws, cudaStream_t stream);

// Causal paged attention, q and out [T, Hq * D] bf16 (see AttentionBatch), over a cache of any
// KvDType but f32. Returns cudaErrorInvalidValue for a head dim outside kAttentionHeadDims (bf16)
// or outside {64, 128} (the other formats).
// round, rounded: as LaunchRmsNorm's, where the keys were split (the pass that merges the splits
// rounds; bf16 to int4-token caches, head_dim a multiple of 32).
cudaError_t LaunchPagedAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                 const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                 const AttentionWorkspace& ws, cudaStream_t stream,
                                 const QuantizedActivations* round = nullptr, bool* rounded = nullptr);
// How many launches of the pass that merges split keys (attention_combine.cuh) took the form that
// loads each thread's column of every split's partial output with the maxima (at most 8 splits,
// head dims up to 128): for tests, which must know that form ran.
int64_t CombineEarlyLaunched();

// Which kernel runs prefill attention on bf16/fp16 caches: kAuto takes Hopper's warpgroup-MMA
// kernel on compute capability 9.0 (H100, H200) and the mma.sync kernel elsewhere; kMma takes
// the mma.sync kernel everywhere (benchmarks and tests compare the two). KVS_PREFILL_KERNEL=mma in
// the environment starts a process with kMma. Process-wide; set it between launches.
enum class PrefillKernel { kAuto, kMma };
void SetPrefillKernel(PrefillKernel kernel);
// How many blocks the Hopper prefill kernel launches, each running work items (128 query rows of
// one sequence and KV head over one key split) one after another: 0 (the default) as many as the
// GPU holds at once, so that an item's start overlaps the last one's end; N > 0 at most N (tests
// run many items a block); kHopperPrefillBlockPerItem a block per item (for comparison).
// KVS_WGMMA_BLOCKS=N|item in the environment starts a process with one. Process-wide.
inline constexpr int32_t kHopperPrefillBlockPerItem = -1;
void SetHopperPrefillBlocks(int32_t blocks);
// How the Hopper prefill kernel's producer loads bf16/fp16 K/V tiles. kTensorCopies (the default):
// a tile's 16-key pieces of pages by the tensor memory accelerator, one instruction per piece and
// 64 elements of head_dim (kv_tensor_map.h), where pages hold a multiple of 16 keys; other pages,
// and a tile that reaches past its range's end (its keys past the end zero-filled), take kCopies:
// 16-byte cp.async copies from each producer thread, each key located through the block table.
// KVS_WGMMA_KV=copies in the environment starts a process with kCopies (for comparison).
// Process-wide; quantized caches decoded first are read as fp16 pages, so they follow it too.
enum class HopperPrefillKvLoads { kCopies, kTensorCopies };
void SetHopperPrefillKvLoads(HopperPrefillKvLoads loads);
// Whether the Hopper prefill kernel moves each row's running max at every new maximum and rescales
// its output every tile (true), or lets the max lag by up to 2^8 and rescales only when it moves
// (false, the default). Process-wide, for tests and benchmarks; KVS_WGMMA_RESCALE=eager starts true.
void SetHopperPrefillEagerRescale(bool eager);
// The Hopper prefill kernel's softmax: each row's max on every key tile (kEveryTile), or on a
// row's first tile only, the later tiles' exponentials checked against the lagging max
// (kLagging); kByHeadDim, the default, takes whichever measured faster at the launch's head dim
// (lagging at 64, every tile at 128). Process-wide, for tests and benchmarks;
// KVS_WGMMA_SOFTMAX=every-tile or =lagging starts with one of them for every head dim.
// KVS_WGMMA_RESCALE=eager takes kEveryTile's kernel.
enum class HopperPrefillSoftmax { kByHeadDim, kEveryTile, kLagging };
void SetHopperPrefillSoftmax(HopperPrefillSoftmax softmax);
// Launches of the Hopper prefill kernel that took tensor copies since the process began (tests
// check that the path they ask for ran).
int64_t HopperPrefillTensorCopyLaunches();
// Whether the next prefill launch on the current device takes the Hopper kernel.
bool UseHopperPrefill();
// Whether the current device runs the Hopper kernel at all (compute capability 9.0), whatever the
// process-wide choice says.
bool HopperPrefillDevice();
// How the Hopper prefill kernel reads fp8/int8/int4-token caches. kDecodedFirst: one kernel decodes
// every key and value the step attends to into fp16 pages of the workspace's kv_scratch, then
// the fp16 kernel runs over them (the same fp16 values as the other two, so the same results).
// kStagedInPlace: the producer warps queue the codes by cp.async into the stage and convert them
// there. kRegisters: they load and convert a piece at a time through registers. kAuto (the
// default) decodes first where the step is mostly prompt (at least kDecodeFirstMinQueries query
// tokens per sequence on average) and its sequences' pages fit the scratch, else stages in place.
// KVS_WGMMA_CODES=decoded|staged|registers in the environment starts a process with one of
// them. Process-wide, for tests and benchmarks to compare; set it between launches.
enum class QuantizedPrefillLoads { kAuto, kDecodedFirst, kStagedInPlace, kRegisters };
void SetQuantizedPrefillLoads(QuantizedPrefillLoads loads);
QuantizedPrefillLoads GetQuantizedPrefillLoads();
inline constexpr int32_t kDecodeFirstMinQueries = 128;

}  // namespace kvs::cuda
