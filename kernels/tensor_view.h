// Non-owning 2-D row-major view of backend memory: rows x cols elements, `stride` elements
// between row starts (>= cols), so a column slice (e.g. the K heads inside a fused QKV row)
// is a view too. Kernels take views; owners are DeviceBuffer (backend.h).
#pragma once

#include <cstdint>

#include "kernels/common/dtype.h"
#include "kernels/common/ggml_types.h"
#include "kernels/common/status_macros.h"

namespace kvs {

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;  // elements between consecutive rows
  GgmlType blocks = GgmlType::kF32;  // dtype kBlocks only: the rows' GGML block type

  // Bytes that `elems` consecutive elements of a row take (whole blocks for kBlocks).
  int64_t BytesOf(int64_t elems) const {
    if (dtype != DType::kBlocks) return elems * static_cast<int64_t>(DTypeSize(dtype));
    const auto info = LookupGgmlType(static_cast<uint32_t>(blocks));
    KVS_CHECK(info.has_value() && elems % info->block_elems == 0);
    return elems / info->block_elems * info->block_bytes;
  }

  static TensorView Contiguous(void* data, DType dtype, int64_t rows, int64_t cols) {
    return TensorView{data, dtype, rows, cols, cols};
  }

  bool IsContiguous() const { return stride == cols || rows <= 1; }
  int64_t NumElements() const { return rows * cols; }

  // Columns [begin, begin + n) of every row.
  TensorView Cols(int64_t begin, int64_t n) const {
    KVS_CHECK(begin >= 0 && n >= 0 && begin + n <= cols);
    return TensorView{static_cast<char*>(data) + BytesOf(begin), dtype, rows, n, stride, blocks};
  }
  // Rows [begin, begin + n).
  TensorView Rows(int64_t begin, int64_t n) const {
    KVS_CHECK(begin >= 0 && n >= 0 && begin + n <= rows);
    return TensorView{static_cast<char*>(data) + begin * BytesOf(stride), dtype, n, cols, stride, blocks};
  }
  template <typename T>
  T* Row(int64_t r) const {
    return reinterpret_cast<T*>(static_cast<char*>(data) + r * BytesOf(stride));
  }
};

}  // namespace kvs
