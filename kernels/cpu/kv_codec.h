// Encoding and decoding of one (token, head) row of the KV cache in any KvDType — the CPU
// reference of what the CUDA kernels do on the fly (formats in kernels/common/kv_format.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common/kv_format.h"
#include "kernels/common/paged_kv.h"

namespace kvs::cpu {

// Writes x[0..dim) as codes (KvRowBytes) and scales (KvScaleBytes; unused when 0). For the
// channel-quantized formats this is a value row (keys: EncodeKeyBlock).
void EncodeKvRow(const float* x, KvDType t, int32_t dim, std::byte* codes, std::byte* scales);
// The values the row holds, as floats.
void DecodeKvRow(const std::byte* codes, const std::byte* scales, KvDType t, int32_t dim, float* out);
// `rows` stored rows decoded to out + i * dim (row i's codes at codes + i * code_stride, its
// scales at scales + i * scale_stride): DecodeKvRow's floats bit for bit, eight at a time where
// the CPU has AVX2 and F16C and the format is bf16, fp16, fp8, int8 or int4-token with dim a
// multiple of 8 (kv_row_decode.cc), by one copy for adjacent f32 rows, by DecodeKvRow otherwise.
// The fast attention's decoder (the reference keeps DecodeKvRow).
void DecodeKvRowsVector(const std::byte* codes, int64_t code_stride, const std::byte* scales, int64_t scale_stride,
                        int32_t rows, KvDType t, int32_t dim, float* out);

// Channel-quantized keys (KvChannelQuantized): the `rows` key rows of one head of one block
// (rows[i] for its token i) as codes, the row of token i at codes + i * code_stride, and one
// (scale, zero) fp16 pair per channel at channel_scales.
void EncodeKeyBlock(const float* const* rows, int32_t n, KvDType t, int32_t dim, std::byte* codes,
                    int64_t code_stride, std::byte* channel_scales);
// One key row of such a block.
void DecodeKeyRow(const std::byte* codes, const std::byte* channel_scales, KvDType t, int32_t dim, float* out);

// One sequence's keys and values as the attention kernels read them, by position: from the
// block table's blocks, decoded from the cache's format (f32 rows in place), and for the
// channel-quantized formats from the sequence's bf16 residual block past its last whole block.
class KvRowReader {
 public:
  KvRowReader(const PagedKvView& cache, const AttentionBatch& batch, int32_t seq, int32_t kv_head);
  // Points key / value at position `pos`'s rows, decoding into key_buf / value_buf when needed.
  void Read(int32_t pos, float* key_buf, float* value_buf, const float*& key, const float*& value) const;

  // Where position `pos`'s key and value rows are stored (codes, and scales where the format has
  // them) and those of the positions after it in the same cache block, up to `count` in all (the
  // run's length is the returned count): row i's codes at k + i * code_stride, its scales at
  // k_scales + i * scale_stride. For a caller with a row decoder of its own; only for the formats
  // stored a token row at a time (RowsStoredPerToken: not channel-quantized, so no residual ring).
  struct StoredRun {
    const std::byte *k, *v, *k_scales, *v_scales;
    int64_t code_stride, scale_stride;
    int32_t count;
  };
  StoredRun Stored(int32_t pos, int32_t count) const;
  static bool RowsStoredPerToken(KvDType t) { return !KvChannelQuantized(t); }

 private:
  const PagedKvView& cache_;
  const int32_t* blocks_;
  int32_t kv_head_;
  int32_t sealed_ = 0;    // positions below are in whole blocks (channel-quantized formats)
  int32_t residual_ = -1;
  bool holds_sink_ = false;         // its ring's sink holds positions [0, block_size): read from there
  int64_t Slot(int32_t pos) const;  // pos's slot in the cache, from the block table (checked)
};

}  // namespace kvs::cpu
