// The CPU reference kernels: float32, plain loops, the thread pool across rows. These are the oracle
// every CUDA kernel is compared with, so they favour clarity over speed (the one exception is
// the tiling in MatMulTransposed, which keeps SmolLM2 tests fast on 2 cores).
//
// Pointer arguments carry their shape in a comment; strides are in elements.
#pragma once

#include <cstdint>

#include "kernels/common/paged_kv.h"

namespace kvs::cpu {

// out[t, :] = table[ids[t] - first_id, :], or zeros when that row is not in the table.
// table [rows, K] (the rows of ids first_id..first_id+rows-1); out [T, K] (row stride out_stride).
void EmbeddingF32(const int32_t* ids, int64_t num_tokens, const float* table, int32_t first_id,
                  int64_t rows, int64_t hidden, float* out, int64_t out_stride);

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight.  x, out [T, K]; out may be x.
void RmsNormF32(const float* x, int64_t x_stride, const float* weight, int64_t rows, int64_t cols,
                float eps, float* out, int64_t out_stride);

// out[t, n] = sum_k x[t, k] * w[n, k] + (bias ? bias[n] : 0).  x [T, K]; w [N, K] contiguous.
void MatMulTransposedF32(const float* x, int64_t x_stride, const float* w, const float* bias,
                         int64_t rows, int64_t k, int64_t n, float* out, int64_t out_stride);

// Rotary embedding, HF rotate_half pairing (d with d + D/2), angle = position * inv_freq[d].
// x [T, heads * D] in place.
void RopeF32(float* x, int64_t x_stride, int64_t num_tokens, int32_t heads, int32_t head_dim,
             const int32_t* positions, const float* inv_freq);

// cache.k/v[slot_mapping[t]] = k/v[t].  k, v [T, Hk * D]. Slot -1 skips the token; slot s <= -2
// is residual slot -(s + 2) (bf16; channel-quantized caches).
void WriteKvF32(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                int64_t num_tokens, const int32_t* slot_mapping, const PagedKvView& cache);

// Channel-quantized caches: the blocks this step completes, written whole (Backend::SealKvGroups).
void SealKvGroupsF32(const float* k, int64_t k_stride, const float* v, int64_t v_stride, const AttentionBatch& batch,
                     const PagedKvView& cache);

// Causal paged attention (see AttentionBatch for the indexing), over the last cache.window keys
// when the cache has a window. q, out [T, Hq * D].
void PagedAttentionF32(const float* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                       const AttentionBatch& batch, float scale, float* out, int64_t out_stride);

// The same attention over query tiles (the fast backend's): each key and value decoded once per
// tile of up to 16 queries x the GQA group instead of once per query and head. Equal to
// PagedAttentionF32 up to float summation order.
void PagedAttentionTiledF32(const float* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                            const AttentionBatch& batch, float scale, float* out, int64_t out_stride);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, I + i].  gate_up [T, 2I]; out [T, I].
void SwiGluF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
               int64_t out_stride);
// The same with gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) for silu.
void GeluGluF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
                int64_t out_stride);
// The fast backend's (gated_activation_fast.cc): tanh and silu by a vectorizable exponential, tanh
// within 2e-7 of std::tanh, silu within a few float roundings of x / (1 + std::exp(-x)).
void GeluGluFastF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
                    int64_t out_stride);
void SwiGluFastF32(const float* gate_up, int64_t gu_stride, int64_t rows, int64_t inter, float* out,
                   int64_t out_stride);
// That tanh and that silu alone, for their tests.
float TanhForGelu(float y);
float SiluFast(float x);

}  // namespace kvs::cpu
