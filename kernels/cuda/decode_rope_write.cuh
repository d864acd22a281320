// The decode step's rope and KV write inside the bf16 decode MMA kernel (PagedDecodeMmaKernel's
// kRope): what LaunchRopeWriteKv would do for one decode token, split among the attention blocks
// that need it, so that a batch-1 step loses a kernel and its launch a layer.
#pragma once

#include "kernels/cuda/paged_attention_common.cuh"
#include "kernels/cuda/rope.cuh"

namespace kvs::cuda::attention {

// Block (split, kvh) of decode token `tok` (context ctx): rotates the group's q heads from q0
// (unrotated, heads D apart) into `rotated` (16 x D bf16 of shared memory), and — in the block
// whose split holds position ctx - 1, the token's own, which no other split reads — rotates the
// token's key of head kvh and stores it and the value into the token's slot. Ends with a block
// barrier, so the rotated q and the stored key are there before the caller reads either.
// A decode token's slot is its sequence's position ctx - 1 (the engine's step builder), so the
// key is stored before the only block that attends to it loads it.
template <int D>
__device__ inline void RopeDecodeToken(const Params& p, int tok, int ctx, int kvh, int split, const bf16* q0,
                                       bf16* rotated) {
  constexpr int kHalf = D / 2;
  const Params::DecodeRope& r = p.rope;
  const int group = p.q_heads / p.kv_heads;
  const float pos = static_cast<float>(r.positions[tok]);
  for (int i = threadIdx.x; i < group * kHalf; i += kThreads) {
    const int h = i / kHalf, d = i % kHalf;
    bf16 a = q0[h * D + d], b = q0[h * D + d + kHalf];
    rope::RotatePair(pos, r.inv_freq[d], a, b);
    rotated[h * D + d] = a;
    rotated[h * D + d + kHalf] = b;
  }
  const int32_t slot = r.slot_mapping[tok];
  if (ctx >= 1 && (ctx - 1) / p.keys_per_split == split && slot >= 0) {
    const KvRow row = LocateKvIn(p, slot / p.block_size, slot % p.block_size, kvh);
    bf16* const k_dst = reinterpret_cast<bf16*>(r.k_store + row.codes);
    bf16* const v_dst = reinterpret_cast<bf16*>(r.v_store + row.codes);
    const bf16* const k_src = r.k_new + static_cast<int64_t>(tok) * r.k_stride + static_cast<int64_t>(kvh) * D;
    const bf16* const v_src = r.v_new + static_cast<int64_t>(tok) * r.v_stride + static_cast<int64_t>(kvh) * D;
    for (int d = threadIdx.x; d < kHalf; d += kThreads) {
      bf16 a = k_src[d], b = k_src[d + kHalf];
      rope::RotatePair(pos, r.inv_freq[d], a, b);
      k_dst[d] = a;
      k_dst[d + kHalf] = b;
      v_dst[d] = v_src[d];
      v_dst[d + kHalf] = v_src[d + kHalf];
    }
  }
  __syncthreads();
}

}  // namespace kvs::cuda::attention
