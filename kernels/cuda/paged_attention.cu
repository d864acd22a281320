// LaunchPagedAttention: fills the kernel parameters from the cache view and the batch and hands
// them to the instantiation for the cache's format (paged_attention_<format>.cu).
#include <atomic>

#include "kernels/cuda/kernel_choice.h"
#include "kernels/cuda/paged_attention_kernels.cuh"

namespace kvs::cuda {
namespace {
KernelChoice g_cluster_merge("KVS_DECODE_MERGE", "cluster");  // alternative: the splits merged in a cluster
std::atomic<int64_t> g_cluster_merges{0};
KernelChoice g_rope_in_attention("KVS_DECODE_ROPE", "attention");  // alternative: rope + KV write in decode attention
std::atomic<int64_t> g_ropes_in_attention{0};
}  // namespace

bool DecodeTakesRope(const PagedKvView& cache, int32_t q_heads, const AttentionBatch& batch) {
  return g_rope_in_attention.Alternative() && cache.dtype == KvDType::kBF16 && cache.window == 0 &&
         cache.kv_heads > 0 && q_heads % cache.kv_heads == 0 &&
         DecodeOnTensorCores(cache.dtype, batch.max_query_len, q_heads / cache.kv_heads, cache.head_dim);
}
void SetDecodeRopeInAttention(bool on) { g_rope_in_attention.Set(on); }
void ResetDecodeRopeInAttention() { g_rope_in_attention.Reset(); }
int64_t DecodeRopesInAttentionLaunched() { return g_ropes_in_attention.load(); }

void SetDecodeClusterMerge(bool on) { g_cluster_merge.Set(on); }
void ResetDecodeClusterMerge() { g_cluster_merge.Reset(); }
bool DecodeClusterMergeAvailable() { return pdl::HopperBinary(); }
int64_t DecodeClusterMergesLaunched() { return g_cluster_merges.load(); }

namespace attention {
bool DecodeClusterMerge() { return g_cluster_merge.Alternative() && pdl::HopperBinary(); }
void CountDecodeClusterMerge() { g_cluster_merges.fetch_add(1); }

extern template cudaError_t LaunchAttentionFor<KvDType::kBF16>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kF16>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kFP8>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kINT8>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kINT4>(Params, int, int, int, cudaStream_t);
}  // namespace attention

cudaError_t LaunchPagedAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                 const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                 const AttentionWorkspace& ws, cudaStream_t stream, const QuantizedActivations* round,
                                 bool* rounded, const DecodeRopeInputs* rope) {
  using attention::LaunchAttentionFor;
  if (rounded != nullptr) *rounded = false;
  if (rope != nullptr && !DecodeTakesRope(cache, q_heads, batch)) return cudaErrorNotSupported;
  if (batch.num_tokens == 0) return cudaSuccess;
  if (KvChannelQuantized(cache.dtype)) {
    return LaunchKiviAttention(q, q_stride, q_heads, cache, batch, scale, out, out_stride, ws, stream);
  }
  if (cache.window > 0 || !TiledAttentionSupports(cache.dtype, cache.head_dim)) {
    return LaunchWindowAttention(q, q_stride, q_heads, cache, batch, scale, out, out_stride, stream);
  }
  attention::Params p = attention::MakeParams(q, q_stride, q_heads, cache, batch, scale, out, out_stride, ws);
  if (round != nullptr && cache.head_dim % 32 == 0) {
    p.round = *round;
    p.rounded = rounded;
  }
  if (rope != nullptr) {
    p.rope.positions = rope->positions;
    p.rope.inv_freq = rope->inv_freq;
    p.rope.k_new = rope->k_new;
    p.rope.k_stride = rope->k_stride;
    p.rope.v_new = rope->v_new;
    p.rope.v_stride = rope->v_stride;
    p.rope.slot_mapping = rope->slot_mapping;
    p.rope.k_store = static_cast<unsigned char*>(cache.k);
    p.rope.v_store = static_cast<unsigned char*>(cache.v);
    const cudaError_t err =
        LaunchAttentionFor<KvDType::kBF16>(p, cache.head_dim, batch.num_seqs, batch.max_query_len, stream);
    if (err == cudaSuccess) g_ropes_in_attention.fetch_add(1);
    return err;
  }
  const int d = cache.head_dim, n = batch.num_seqs, lq = batch.max_query_len;
  switch (cache.dtype) {
    case KvDType::kBF16: return LaunchAttentionFor<KvDType::kBF16>(p, d, n, lq, stream);
    case KvDType::kF16: return LaunchAttentionFor<KvDType::kF16>(p, d, n, lq, stream);
    case KvDType::kFP8: return LaunchAttentionFor<KvDType::kFP8>(p, d, n, lq, stream);
    case KvDType::kINT8: return LaunchAttentionFor<KvDType::kINT8>(p, d, n, lq, stream);
    case KvDType::kINT4: return LaunchAttentionFor<KvDType::kINT4>(p, d, n, lq, stream);
    default: break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace kvs::cuda
