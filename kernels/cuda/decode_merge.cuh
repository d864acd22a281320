// The end of the decode MMA kernels (PagedDecodeMmaKernel, PagedDecodeCodesKernel, the KIVI decode
// kernel): the block's warps merge their running (max, sum, O), then the block writes its group's
// output rows, or its split's partial for CombineSplits — or, launched in a thread-block cluster
// of its splits (Hopper), merges them with the cluster's other blocks through distributed shared
// memory, so no partial reaches global memory and no combine kernel follows.
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#endif

#include "kernels/cuda/attention_combine.cuh"
#include "kernels/cuda/paged_attention_common.cuh"

namespace kvs::cuda {
namespace attention {

// Row r's block-wide max and sum from the warps' (max, sum) pairs in merge_ml.
template <int kWarps>
__device__ __forceinline__ void BlockRowMaxSum(float (*merge_ml)[16][2], int r, float& mm, float& ll) {
  mm = -FLT_MAX;
  ll = 0.0f;
  for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, merge_ml[w][r][0]);
  for (int w = 0; w < kWarps; ++w) {
    if (merge_ml[w][r][0] != -FLT_MAX) ll += merge_ml[w][r][1] * exp2f(merge_ml[w][r][0] - mm);
  }
}

// The second pass of split-K attention inside the cluster of a (sequence, KV head)'s splits: block
// `rank` of S merges the rank-th S-th of the group's outputs (whole 32-dim units, so the rounding
// for the block GEMV runs in whole warps), reading every split's unnormalised O (o_s, fragment
// order: slot_of maps a dim to its slot) and row (max, sum) (row_ml) from the blocks' shared
// memory. The arithmetic is CombineSplitsKernel's in its order — the max, the weights, the sum of
// w_s l_s as that kernel's lanes add it up (a butterfly over 32 lanes, splits past S adding 0),
// then the weighted partials in split order — so the output bits are the same as the partials
// written and combined by it.
template <int D>
__device__ inline void CombineSplitsInCluster(const Params& p, float* o_s, float (*row_ml)[2], const uint8_t* slot_of,
                                              int tok, int kvh) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every block's o_s and row_ml written, and visible across the cluster
  const int splits = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int group = p.q_heads / p.kv_heads;
  const int n = group * D;
  const int per = (n / 32 + splits - 1) / splits * 32;
  const int lo = rank * per, hi = min(n, lo + per);
  for (int i = lo + static_cast<int>(threadIdx.x); i < hi; i += kThreads) {
    const int r = i / D, d = i % D, slot = slot_of[d];
    float m_s[kMaxClusterSplits], l_s[kMaxClusterSplits], a_s[kMaxClusterSplits];
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) {
      m_s[s] = -FLT_MAX, l_s[s] = 0.0f, a_s[s] = 0.0f;
      if (s < splits) {
        const float* ml = cluster.map_shared_rank(&row_ml[r][0], s);
        m_s[s] = ml[0];
        l_s[s] = ml[1];
        a_s[s] = cluster.map_shared_rank(o_s, s)[r * D + slot];
      }
    }
    float m = -FLT_MAX;
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) m = fmaxf(m, m_s[s]);
    float w[kMaxClusterSplits], v[kMaxClusterSplits];
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) {
      w[s] = SplitWeight(m_s[s], l_s[s], m);
      v[s] = __fmul_rn(w[s], l_s[s]);  // never contracted into the adds below
    }
    static_assert(kMaxClusterSplits == 8, "the butterfly below adds 8 lanes");
    const float den = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
    float num = 0.0f;
#pragma unroll
    for (int s = 0; s < kMaxClusterSplits; ++s) {
      if (w[s] != 0.0f) num = fmaf(w[s], a_s[s], num);
    }
    StoreCombined<D>(p, tok, kvh * group + r, d, num / den);
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
#endif
}

// Each lane holds O fragments o[n][0..3] for rows g and g + 8 (see PagedDecodeMmaKernel);
// `dim_of(n, col)` names the head-dim element that column `col` of n-tile n holds, so kernels that
// permute the head dimension share this code. Row maxima and sums go through `merge_ml`; the warps
// add their rescaled O in turn into `o_s`, 16 x D floats of shared memory the caller no longer
// needs, kept in fragment order (slot n * 8 + col): a permuted dim order there would put a warp's
// 32 lanes on one bank.
template <int D, int kNTiles, typename DimOf>
__device__ inline void MergeDecodeWarps(const Params& p, const float (&o)[kNTiles][4], float m_lo, float l_lo,
                                        float m_hi, float l_hi, float* o_s, float (*merge_ml)[16][2], int tok, int kvh,
                                        int split, DimOf dim_of) {
  constexpr int kWarps = kThreads / 32;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int group = p.q_heads / p.kv_heads;
  if (t4 == 0) {
    merge_ml[warp][g][0] = m_lo;
    merge_ml[warp][g][1] = l_lo;
    merge_ml[warp][g + 8][0] = m_hi;
    merge_ml[warp][g + 8][1] = l_hi;
  }
  __syncthreads();
  float gm_lo = -FLT_MAX, gm_hi = -FLT_MAX;  // block-wide row maxima
  for (int w = 0; w < kWarps; ++w) {
    gm_lo = fmaxf(gm_lo, merge_ml[w][g][0]);
    gm_hi = fmaxf(gm_hi, merge_ml[w][g + 8][0]);
  }
  const float s_lo = m_lo == -FLT_MAX ? 0.0f : exp2f(m_lo - gm_lo);
  const float s_hi = m_hi == -FLT_MAX ? 0.0f : exp2f(m_hi - gm_hi);
  for (int i = tid; i < 16 * D; i += kThreads) o_s[i] = 0.0f;
  __syncthreads();
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
        const int slot = n * 8 + 2 * t4;
        o_s[g * D + slot] += o[n][0] * s_lo;
        o_s[g * D + slot + 1] += o[n][1] * s_lo;
        o_s[(g + 8) * D + slot] += o[n][2] * s_hi;
        o_s[(g + 8) * D + slot + 1] += o[n][3] * s_hi;
      }
    }
    __syncthreads();
  }
  if (p.cluster_merge) {
    __shared__ float row_ml[16][2];
    __shared__ uint8_t slot_of[D];
    static_assert(D <= 256, "slots fit a byte");
    if (tid < group) BlockRowMaxSum<kWarps>(merge_ml, tid, row_ml[tid][0], row_ml[tid][1]);
    for (int slot = tid; slot < D; slot += kThreads) slot_of[dim_of(slot / 8, slot % 8)] = static_cast<uint8_t>(slot);
    CombineSplitsInCluster<D>(p, o_s, row_ml, slot_of, tok, kvh);
    return;
  }
  // Rows 0..group-1 are the group's heads; each output thread recomputes its row's max and sum.
  for (int i = tid; i < group * D; i += kThreads) {
    const int r = i / D, slot = i % D, d = dim_of(slot / 8, slot % 8);
    float mm, ll;
    BlockRowMaxSum<kWarps>(merge_ml, r, mm, ll);
    const int h = kvh * group + r;
    const float a = o_s[r * D + slot];
    if (p.num_splits == 1) {
      p.out[static_cast<int64_t>(tok) * p.out_stride + h * D + d] = __float2bfloat16(a / ll);
    } else {
      const int64_t idx = (static_cast<int64_t>(split) * p.num_tokens + tok) * p.q_heads + h;
      p.partial_out[idx * D + d] = a;
      if (d == 0) {
        p.partial_ml[idx * 2] = mm;
        p.partial_ml[idx * 2 + 1] = ll;
      }
    }
  }
}

}  // namespace attention
}  // namespace kvs::cuda
