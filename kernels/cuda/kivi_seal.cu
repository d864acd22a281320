// SealKvGroups on the GPU: each block a step completes in a channel-quantized cache (int4 / int2,
// kernels/common/kv_format.h) is quantized whole — keys per channel over the block's tokens,
// values per token in groups of 32 — from the step's rows and, for the block's earlier tokens, the
// sequence's bf16 residual ring. The bytes equal the CPU encoder's (kernels/cpu/kv_codec.cc,
// kv_write.cc): the one (scale, zero) search of kernels/common/kv_quant.h, with no fused
// multiply-adds (this file is built with -fmad=false, kv_codec.cc with -ffp-contract=off).
//
// Work: one block of threads per (sequence, KV head, block to seal); a thread per key byte (the
// 2 or 4 channels whose codes share a byte) and per value group. Sealing is rare (a sequence seals
// a block every block_size tokens), so the search's 65 candidates per group cost little.
#include <cuda_fp16.h>

#include "kernels/common/kv_quant.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 128;

// The hardware's fp16 conversions, for FitScaleZero (kernels/common/kv_quant.h).
struct DeviceHalf {
  __device__ uint16_t Round(float x) const { return __half_as_ushort(__float2half_rn(x)); }
  __device__ float Value(uint16_t bits) const { return __half2float(__ushort_as_half(bits)); }
};

// grid (sequence * kv_heads + head, block of the step); dynamic shared memory: the block's
// key and value rows (bf16, every KV head) as pointers, one per token.
__global__ void __launch_bounds__(kThreads) SealKernel(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                                                       AttentionBatch batch, PagedKvView cache) {
  extern __shared__ const bf16* rows[];  // [2][block_size]: key rows, then value rows
  const int32_t s = blockIdx.x / cache.kv_heads, h = blockIdx.x % cache.kv_heads;
  const int32_t bs = cache.block_size, dim = cache.head_dim;
  const KvResidualRing ring = cache.ring();
  const int32_t begin = batch.query_start[s], n = batch.query_start[s + 1] - begin;
  const int32_t end_pos = batch.context_len[s], first_pos = end_pos - n;
  const int32_t from = batch.sealed[s], to = max(from, ring.SealedEnd(end_pos));
  const int32_t j = from / bs + static_cast<int32_t>(blockIdx.y);
  // The CPU reference refuses a malformed step by CHECK; here such a block is left alone.
  if (from % bs != 0 || from > first_pos || (j + 1) * bs > to) return;
  const int32_t block = batch.block_table[static_cast<int64_t>(s) * batch.max_blocks_per_seq + j];
  if (block < 0 || block >= cache.num_blocks) return;
  const int32_t residual = batch.residual != nullptr ? batch.residual[s] : -1;
  const bool residual_ok = residual >= 0 && residual < cache.num_residual;
  const int64_t width = static_cast<int64_t>(cache.kv_heads) * dim;
  for (int32_t i = threadIdx.x; i < bs; i += blockDim.x) {
    const int32_t pos = j * bs + i;
    if (pos >= first_pos) {  // this step's row
      rows[i] = k + (begin + pos - first_pos) * k_stride;
      rows[bs + i] = v + (begin + pos - first_pos) * v_stride;
    } else {  // an earlier token: in the sequence's residual ring
      const int64_t r = residual_ok ? ring.Slot(residual, pos) : 0;
      rows[i] = residual_ok ? static_cast<const bf16*>(cache.k_residual) + r * width : nullptr;
      rows[bs + i] = residual_ok ? static_cast<const bf16*>(cache.v_residual) + r * width : nullptr;
    }
  }
  __syncthreads();
  for (int32_t i = 0; i < bs; ++i) {
    if (rows[i] == nullptr) return;  // a block completed across steps without its ring
  }
  const bool two_bit = cache.dtype == KvDType::kKivi2;
  const int32_t per_byte = two_bit ? 4 : 2, bits = two_bit ? 2 : 4;
  const float levels = two_bit ? 3.0f : kInt4Levels;
  auto* kc = static_cast<unsigned char*>(cache.k);
  auto* vc = static_cast<unsigned char*>(cache.v);
  const int64_t first_slot = static_cast<int64_t>(block) * bs;
  const int32_t row_bytes = static_cast<int32_t>(cache.RowBytes()), groups = dim / kKvInt4Group;
  for (int32_t item = threadIdx.x; item < row_bytes + bs * groups; item += blockDim.x) {
    if (item < row_bytes) {  // key byte `item`: channels item * per_byte ..
      ScaleZero q[4];
      auto* sz = reinterpret_cast<uint16_t*>(kc + cache.ChannelScaleOffset(block, h));
      for (int32_t c = 0; c < per_byte; ++c) {
        const int32_t d = item * per_byte + c;
        q[c] =
            FitScaleZero([&](int32_t i) { return __bfloat162float(rows[i][h * dim + d]); }, bs, levels, DeviceHalf{});
        sz[2 * d] = q[c].s_bits;
        sz[2 * d + 1] = q[c].z_bits;
      }
      for (int32_t i = 0; i < bs; ++i) {
        uint32_t byte = 0;
        for (int32_t c = 0; c < per_byte; ++c) {
          const float x = __bfloat162float(rows[i][h * dim + item * per_byte + c]);
          byte |= static_cast<uint32_t>(QuantizeLevels(x, q[c].z, q[c].inv, levels)) << (c * bits);
        }
        kc[cache.RowOffset(first_slot + i, h) + item] = static_cast<unsigned char>(byte);
      }
    } else {  // value group g of token i
      const int32_t i = (item - row_bytes) / groups, g = (item - row_bytes) % groups;
      const bf16* x = rows[bs + i] + h * dim + g * kKvInt4Group;
      const ScaleZero q =
          FitScaleZero([&](int32_t e) { return __bfloat162float(x[e]); }, kKvInt4Group, levels, DeviceHalf{});
      auto* sz = reinterpret_cast<uint16_t*>(vc + cache.ScaleOffset(first_slot + i, h));
      sz[2 * g] = q.s_bits;
      sz[2 * g + 1] = q.z_bits;
      unsigned char* codes = vc + cache.RowOffset(first_slot + i, h) + g * kKvInt4Group / per_byte;
      for (int32_t b = 0; b < kKvInt4Group / per_byte; ++b) {
        uint32_t byte = 0;
        for (int32_t c = 0; c < per_byte; ++c) {
          byte |= static_cast<uint32_t>(QuantizeLevels(__bfloat162float(x[b * per_byte + c]), q.z, q.inv, levels))
                  << (c * bits);
        }
        codes[b] = static_cast<unsigned char>(byte);
      }
    }
  }
}

}  // namespace

cudaError_t LaunchSealKvGroups(const bf16* k, int64_t k_stride, const bf16* v, int64_t v_stride,
                               const AttentionBatch& batch, const PagedKvView& cache, cudaStream_t stream) {
  if (batch.num_seqs == 0 || batch.num_tokens == 0) return cudaSuccess;
  if (!KvChannelQuantized(cache.dtype) || batch.sealed == nullptr || cache.head_dim % kKvInt4Group != 0) {
    return cudaErrorInvalidValue;
  }
  // A sequence of n new tokens completes at most ceil(n / block_size) blocks (its sealed positions
  // start at or after its ring's seal point before the step).
  const int32_t bs = cache.block_size;
  const dim3 grid(batch.num_seqs * cache.kv_heads, (batch.max_query_len + bs - 1) / bs);
  SealKernel<<<grid, kThreads, 2 * bs * sizeof(const bf16*), stream>>>(k, k_stride, v, v_stride, batch, cache);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
