// LaunchPagedAttention: fills the kernel parameters from the cache view and the batch and hands
// them to the instantiation for the cache's format (paged_attention_<format>.cu). Also the
// count of the split merge's early-partials launches those instantiations keep (cuda_kernels.h).
#include <atomic>

#include "kernels/cuda/paged_attention_kernels.cuh"

namespace kvs::cuda {
namespace {
std::atomic<int64_t> g_combine_early_launches{0};
}  // namespace

int64_t CombineEarlyLaunched() { return g_combine_early_launches.load(); }

namespace attention {
void CountCombineEarlyLaunch() { g_combine_early_launches.fetch_add(1); }

extern template cudaError_t LaunchAttentionFor<KvDType::kBF16>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kF16>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kFP8>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kINT8>(Params, int, int, int, cudaStream_t);
extern template cudaError_t LaunchAttentionFor<KvDType::kINT4>(Params, int, int, int, cudaStream_t);
}  // namespace attention

cudaError_t LaunchPagedAttention(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                 const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                 const AttentionWorkspace& ws, cudaStream_t stream, const QuantizedActivations* round,
                                 bool* rounded) {
  using attention::LaunchAttentionFor;
  if (rounded != nullptr) *rounded = false;
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
