// Paged attention kernels for int4 KV caches (one format per file: they compile in parallel).
#include "kernels/cuda/paged_attention_kernels.cuh"

namespace kvs::cuda::attention {
template cudaError_t LaunchAttentionFor<KvDType::kINT4>(Params, int, int, int, cudaStream_t);
}  // namespace kvs::cuda::attention
