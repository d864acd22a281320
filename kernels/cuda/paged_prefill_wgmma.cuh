// The Hopper prefill kernel's entry points (paged_prefill_wgmma.cu, built for sm_90a alone):
// callable from code built for any architecture, run only on compute capability 9.0.
#pragma once

#include "kernels/cuda/paged_attention_common.cuh"

namespace kvs::cuda::attention {

// Query rows per block (grid.x = splits x ceil(rows / this)).
int32_t WgmmaPrefillRows();
// Blocks of the kernel for `dtype` / `head_dim` resident on the whole GPU at once.
int64_t WgmmaPrefillResidentBlocks(KvDType dtype, int head_dim, int num_sms);
// Whether the kernel serves this cache format and head dim (every KvDType but f32; 64 and 128).
bool WgmmaPrefillSupports(KvDType dtype, int head_dim);
// Runs the kernel (where WgmmaPrefillSupports; else cudaErrorInvalidValue) on a grid planned by
// PlanSplits; the caller combines the splits.
cudaError_t LaunchWgmmaPrefill(const Params& p, KvDType dtype, int head_dim, dim3 grid, cudaStream_t stream);

}  // namespace kvs::cuda::attention
