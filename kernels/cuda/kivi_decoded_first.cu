// Prefill over an int4 / int2 (KIVI) cache on Hopper's kernel: one kernel writes every position the
// step attends to as fp16 — sealed blocks decoded (keys per channel, values per group of 32), the
// newest tokens and the sink from the sequence's bf16 ring, as KvRowReader reads them — into the
// attention workspace's kv_scratch (prefill_decoded_first.cuh's pages and block table), then the
// fp16 Hopper kernel attends over them (LaunchPagedAttention on an fp16 view). The CUDA-core KIVI
// kernel (paged_attention_kivi.cu) stays for decode steps, windows, other GPUs and steps whose pages
// do not fit the scratch (KVS_KIVI_PREFILL=cuda-cores picks it for every step). On an H100 at 16K it
// runs at 0.96x (int4) / 0.99x (int2) bf16's rate, 45x the CUDA-core kernel (docs/performance.md).
#include <cuda_fp16.h>

#include "kernels/cuda/kernel_choice.h"
#include "kernels/cuda/prefill_decoded_first.cuh"

namespace kvs::cuda {
namespace {

KernelChoice g_kivi_prefill_cuda_cores("KVS_KIVI_PREFILL", "cuda-cores");

// Eight elements [8c, 8c + 8) of position `pos`'s key and value rows (head kvh) as fp16.
template <int kBits>
struct KiviRows {
  const PagedKvView& c;
  const int32_t* blocks;
  int32_t sealed_end, residual;
  bool holds_sink;

  __device__ void Decode(int32_t pos, int32_t kvh, int32_t chunk, uint4& k_out, uint4& v_out) const {
    const KvResidualRing ring = c.ring();
    const int32_t d0 = chunk * 8, dim = c.head_dim;
    __half2 k2[4], v2[4];
    if (ring.Reads(pos, sealed_end, holds_sink)) {
      // A bf16 ring row (a ring-less sequence's would be a malformed step: zeros, as the CPU
      // refuses it).
      const int64_t width = static_cast<int64_t>(c.kv_heads) * dim;
      uint4 kr = make_uint4(0, 0, 0, 0), vr = kr;
      if (residual >= 0) {
        const int64_t at = ring.Slot(residual, pos) * width + static_cast<int64_t>(kvh) * dim + d0;
        kr = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(c.k_residual) + at);
        vr = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(c.v_residual) + at);
      }
      const auto* kb = reinterpret_cast<const __nv_bfloat162*>(&kr);
      const auto* vb = reinterpret_cast<const __nv_bfloat162*>(&vr);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        k2[j] = __float22half2_rn(__bfloat1622float2(kb[j]));
        v2[j] = __float22half2_rn(__bfloat1622float2(vb[j]));
      }
    } else {
      const int32_t bs = c.block_size, block = blocks[pos / bs];
      const int64_t slot = static_cast<int64_t>(block) * bs + pos % bs;
      const auto* kc = static_cast<const unsigned char*>(c.k);
      const auto* vc = static_cast<const unsigned char*>(c.v);
      constexpr uint32_t kMask = (1u << kBits) - 1;
      // The chunk's codes: 8 x kBits bits, element j at bit j * kBits.
      auto codes = [&](const unsigned char* row) -> uint32_t {
        if constexpr (kBits == 4) return *reinterpret_cast<const uint32_t*>(row + chunk * 4);
        return *reinterpret_cast<const uint16_t*>(row + chunk * 2);
      };
      const uint32_t kw = codes(kc + c.RowOffset(slot, kvh)), vw = codes(vc + c.RowOffset(slot, kvh));
      const auto* k_pairs = reinterpret_cast<const __half2*>(kc + c.ChannelScaleOffset(block, kvh));
      const __half2 v_pair = reinterpret_cast<const __half2*>(vc + c.ScaleOffset(slot, kvh))[d0 / kKvInt4Group];
      const float2 vsz = __half22float2(v_pair);
      float kf[8], vf[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float2 ksz = __half22float2(k_pairs[d0 + j]);  // (scale, zero) of channel d0 + j
        kf[j] = static_cast<float>((kw >> (j * kBits)) & kMask) * ksz.x + ksz.y;
        vf[j] = static_cast<float>((vw >> (j * kBits)) & kMask) * vsz.x + vsz.y;
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        k2[j] = __floats2half2_rn(kf[2 * j], kf[2 * j + 1]);
        v2[j] = __floats2half2_rn(vf[2 * j], vf[2 * j + 1]);
      }
    }
    k_out = *reinterpret_cast<const uint4*>(k2);
    v_out = *reinterpret_cast<const uint4*>(v2);
  }
};

// Block (i, s): sequence s's logical block i, every KV head, as prefill_decoded_first.cuh's
// DecodeKvToScratchKernel lays its pages out.
template <int kBits>
__global__ void __launch_bounds__(256)
    KiviToScratchKernel(PagedKvView c, AttentionBatch b, attention::DecodedFirstLayout l,
                        attention::DecodedFirstLayout::Pages out) {
  const int32_t i = blockIdx.x, s = blockIdx.y;
  const int64_t out_block = static_cast<int64_t>(s) * l.blocks_per_seq + i;
  if (threadIdx.x == 0) out.table[out_block] = static_cast<int32_t>(out_block);
  const int32_t ctx = b.context_len[s], first = i * c.block_size;
  if (first >= ctx) return;
  const KvResidualRing ring = c.ring();
  const KiviRows<kBits> rows{c, b.block_table + static_cast<int64_t>(s) * b.max_blocks_per_seq,
                             max(b.sealed != nullptr ? b.sealed[s] : 0, ring.SealedEnd(ctx)),
                             b.residual != nullptr ? b.residual[s] : -1, b.sink != nullptr && b.sink[s] != 0};
  const int32_t chunks = c.head_dim / 8, keys = min(c.block_size, ctx - first);
  const int32_t items = keys * c.kv_heads * chunks;
  for (int32_t it = threadIdx.x; it < items; it += blockDim.x) {
    const int32_t ch = it % chunks, kvh = (it / chunks) % c.kv_heads, key = it / chunks / c.kv_heads;
    uint4 kv, vv;
    rows.Decode(first + key, kvh, ch, kv, vv);
    const int64_t dst = l.ChunkOffset(out_block, key, c.kv_heads, kvh, c.head_dim, ch);
    *reinterpret_cast<uint4*>(out.k + dst) = kv;
    *reinterpret_cast<uint4*>(out.v + dst) = vv;
  }
}

}  // namespace

void SetKiviPrefillKernel(KiviPrefillKernel kernel) {
  g_kivi_prefill_cuda_cores.Set(kernel == KiviPrefillKernel::kCudaCores);
}
bool KiviPrefillDecodesFirst() { return !g_kivi_prefill_cuda_cores.Alternative(); }

cudaError_t LaunchKiviPrefillDecodedFirst(const bf16* q, int64_t q_stride, int32_t q_heads, const PagedKvView& cache,
                                          const AttentionBatch& batch, float scale, bf16* out, int64_t out_stride,
                                          const AttentionWorkspace& ws, cudaStream_t stream, bool* ran) {
  *ran = false;
  if (!KiviPrefillDecodesFirst() || batch.max_query_len <= 1 || cache.window > 0 ||
      (cache.head_dim != 64 && cache.head_dim != 128) || !UseHopperPrefill() || cache.k_residual == nullptr) {
    return cudaSuccess;
  }
  const attention::DecodedFirstLayout l =
      attention::DecodedFirstLayoutFor(cache.block_size, cache.kv_heads, cache.head_dim, batch.max_context_len);
  if (ws.kv_scratch == nullptr || l.Bytes(batch.num_seqs) > ws.kv_scratch_bytes) return cudaSuccess;
  const attention::DecodedFirstLayout::Pages scratch = l.Carve(ws.kv_scratch, batch.num_seqs);
  const dim3 grid(l.blocks_per_seq, batch.num_seqs);
  if (cache.dtype == KvDType::kKivi2) {
    KiviToScratchKernel<2><<<grid, 256, 0, stream>>>(cache, batch, l, scratch);
  } else {
    KiviToScratchKernel<4><<<grid, 256, 0, stream>>>(cache, batch, l, scratch);
  }
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  const PagedKvView pages{scratch.k,        scratch.v,      KvDType::kF16, batch.num_seqs * l.blocks_per_seq,
                          cache.block_size, cache.kv_heads, cache.head_dim};
  AttentionBatch b = batch;
  b.block_table = scratch.table;
  b.max_blocks_per_seq = l.blocks_per_seq;
  b.residual = b.sealed = b.sink = nullptr;
  *ran = true;
  return LaunchPagedAttention(q, q_stride, q_heads, pages, b, scale, out, out_stride, ws, stream);
}

}  // namespace kvs::cuda
