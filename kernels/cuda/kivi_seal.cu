// SealKvGroups on the GPU: each block a step completes in a channel-quantized cache (int4 / int2,
// kernels/common/kv_format.h) is quantized whole — keys per channel over the block's tokens,
// values per token in groups of 32 — from the step's rows and, for the block's earlier tokens, the
// sequence's bf16 residual ring. The bytes equal the CPU encoder's (kernels/cpu/kv_codec.cc,
// kv_write.cc): the one (scale, zero) search of kernels/common/kv_quant.h, with no fused
// multiply-adds (this file is built with -fmad=false, kv_codec.cc with -ffp-contract=off).
//
// Work: a warp per (scale, zero) search, its lanes trying the 65 candidates of FitScaleZero
// (lane l: candidates l, l + 32, l + 64, each error summed in the CPU's order) and agreeing on the
// least error, the first candidate on ties — the CPU's pick. Blocks: (sequence, KV head), block
// of the step, and kSlices slices of that block's searches (a key byte's channels, or a token's
// value group), so a step that seals a few blocks still spreads over the GPU: one thread per item,
// as this kernel first did, took ~100 us a layer on an H100 (4 warps on 8 SMs, each thread
// walking 130 candidates), which put int4 decode steps at 1.6x bf16's whenever some sequence
// sealed in every step. Four slices (four searches a warp) still took 68 us a launch in a
// decode step (Nsight Compute, H100: one sequence's block sealed by 32 blocks, latency-bound at
// 9.3 cycles an instruction): decode-sized grids now take a slice per warp's search
// (SealSlices), prompt-sized ones keep at least kMinSlices so that the grid stays small.
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/common/kv_quant.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kvs::cuda {
namespace {

constexpr int kThreads = 256;           // 8 warps
constexpr int kMinSlices = 4;           // blocks sharing one sealed block's searches, at least
constexpr int64_t kMaxSealGrid = 8192;  // blocks a launch may spread its slices over (most exit at once)

// Slices of each sealed block: one task (a key byte's searches, or a value group's) a warp where the grid stays under
// kMaxSealGrid.
int SealSlices(int64_t base_blocks, int64_t tasks) {
  const int64_t one_each = (tasks + kThreads / 32 - 1) / (kThreads / 32);
  const int64_t room = std::max<int64_t>(kMinSlices, kMaxSealGrid / std::max<int64_t>(base_blocks, 1));
  return static_cast<int>(std::max<int64_t>(1, std::min(one_each, room)));
}

// The hardware's fp16 conversions, for FitScaleZero (kernels/common/kv_quant.h).
struct DeviceHalf {
  __device__ uint16_t Round(float x) const { return __half_as_ushort(__float2half_rn(x)); }
  __device__ float Value(uint16_t bits) const { return __half2float(__ushort_as_half(bits)); }
};

// FitScaleZero over x(0) .. x(n - 1) by one warp (every lane calls it; every lane gets the
// answer). Each candidate's error is one lane's sum in FitScaleZero's order, so the errors, and
// the pick (least error, then least candidate; none below 1e300, as with NaN inputs: the whole
// range), are the CPU's. Up to kHeld values are held in registers (a value group's 32, a
// channel's block of up to 32 tokens), so that only the error sum's additions wait on each
// other; longer runs are read through x as they go.
constexpr int kHeld = 32;
template <typename X>
__device__ inline ScaleZero WarpFitScaleZero(X x, int32_t n, float levels, int lane) {
  float held[kHeld];
  const bool in_registers = n <= kHeld;
  if (in_registers) {
#pragma unroll
    for (int i = 0; i < kHeld; ++i) held[i] = i < n ? x(i) : 0.0f;
  }
  float lo = x(0), hi = lo;
  if (in_registers) {  // constant indices only: held stays in registers
#pragma unroll
    for (int i = 1; i < kHeld; ++i) {
      if (i < n) {
        lo = held[i] < lo ? held[i] : lo;
        hi = hi < held[i] ? held[i] : hi;
      }
    }
  } else {
    for (int32_t i = 1; i < n; ++i) {
      const float v = x(i);
      lo = v < lo ? v : lo;
      hi = hi < v ? v : hi;
    }
  }
  double best_err = 1e300;
  int best = kFitCandidates;  // none
  for (int c = lane; c < kFitCandidates; c += 32) {
    const ScaleZero q = FitCandidate(c, lo, hi, levels, DeviceHalf{});
    double err = 0;
    if (in_registers) {
#pragma unroll
      for (int i = 0; i < kHeld; ++i) {
        if (i < n) err += FitError(held[i], q, levels);
      }
    } else {
      for (int32_t i = 0; i < n; ++i) err += FitError(x(i), q, levels);
    }
    if (err < best_err) {
      best_err = err;
      best = c;
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const double e = __shfl_xor_sync(0xffffffffu, best_err, off);
    const int c = __shfl_xor_sync(0xffffffffu, best, off);
    if (e < best_err || (e == best_err && c < best)) {
      best_err = e;
      best = c;
    }
  }
  return best < kFitCandidates ? FitCandidate(best, lo, hi, levels, DeviceHalf{})
                               : MakeScaleZero(lo, hi, levels, DeviceHalf{});
}

// grid (sequence * kv_heads + head, block of the step, slice of SealSlices); dynamic shared memory: the
// block's key and value rows (bf16, every KV head) as pointers, one per token.
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
  const int lane = threadIdx.x % 32;
  const int warps = kThreads / 32 * static_cast<int>(gridDim.z);
  // Tasks: key byte `item` (its channels' searches, then its bs codes), or value group g of
  // token i (one search, then its codes).
  for (int32_t item = blockIdx.z * (kThreads / 32) + threadIdx.x / 32; item < row_bytes + bs * groups; item += warps) {
    if (item < row_bytes) {  // key byte `item`: channels item * per_byte ..
      ScaleZero q[4];
      auto* sz = reinterpret_cast<uint16_t*>(kc + cache.ChannelScaleOffset(block, h));
      for (int32_t c = 0; c < per_byte; ++c) {
        const int32_t d = item * per_byte + c;
        q[c] = WarpFitScaleZero([&](int32_t i) { return __bfloat162float(rows[i][h * dim + d]); }, bs, levels, lane);
        if (lane == 0) {
          sz[2 * d] = q[c].s_bits;
          sz[2 * d + 1] = q[c].z_bits;
        }
      }
      for (int32_t i = lane; i < bs; i += 32) {
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
          WarpFitScaleZero([&](int32_t e) { return __bfloat162float(x[e]); }, kKvInt4Group, levels, lane);
      if (lane == 0) {
        auto* sz = reinterpret_cast<uint16_t*>(vc + cache.ScaleOffset(first_slot + i, h));
        sz[2 * g] = q.s_bits;
        sz[2 * g + 1] = q.z_bits;
      }
      unsigned char* codes = vc + cache.RowOffset(first_slot + i, h) + g * kKvInt4Group / per_byte;
      for (int32_t b = lane; b < kKvInt4Group / per_byte; b += 32) {
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
  const int64_t base = static_cast<int64_t>(batch.num_seqs) * cache.kv_heads * ((batch.max_query_len + bs - 1) / bs);
  const int64_t tasks = cache.RowBytes() + static_cast<int64_t>(bs) * (cache.head_dim / kKvInt4Group);
  const dim3 grid(batch.num_seqs * cache.kv_heads, (batch.max_query_len + bs - 1) / bs, SealSlices(base, tasks));
  SealKernel<<<grid, kThreads, 2 * bs * sizeof(const bf16*), stream>>>(k, k_stride, v, v_stride, batch, cache);
  return cudaGetLastError();
}

}  // namespace kvs::cuda
