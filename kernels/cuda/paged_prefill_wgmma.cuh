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

// The fp16 values of a step's pages, decoded into the attention workspace's scratch
// (prefill_decoded_first.cuh): sequence s's logical block i is scratch block s * blocks_per_seq + i,
// each [block_size][kv_heads][head_dim] fp16.
struct ScratchValues {
  const unsigned char* v = nullptr;
  int64_t block_bytes = 0;
  int64_t num_blocks = 0;
  int32_t blocks_per_seq = 0;
};

// Whether an fp8 cache whose step decodes first runs the e4m3-keys kernel: S = Q K^T by fp8
// wgmma on the cache's own key codes (Q rounded to e4m3 with a scale a row, as the cache rounds
// its rows; each key's scale on its column of S), O += P V in fp16 over values decoded first.
// head_dim 128; KVS_WGMMA_FP8_KEYS=off decodes keys too and runs the fp16 kernel (measurement).
bool WgmmaPrefillKeyCodes(KvDType dtype, int head_dim);
int64_t WgmmaPrefillKeyCodesResidentBlocks(int num_sms);
// p describes the fp8 cache (its K pages are read; its V pages are not), `values` the scratch.
cudaError_t LaunchWgmmaPrefillKeyCodes(const Params& p, const ScratchValues& values, dim3 grid, cudaStream_t stream);

}  // namespace kvs::cuda::attention
