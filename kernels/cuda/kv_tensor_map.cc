#include "kernels/cuda/kv_tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

namespace kvs::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 Encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return PFN_cuTensorMapEncodeTiled_v12000{nullptr};
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

}  // namespace

bool EncodeKvTensorMap(const void* pool, const KvPoolShape& s, CUtensorMap* map) {
  const auto address = reinterpret_cast<uintptr_t>(pool);
  if (pool == nullptr || address % 16 != 0 || s.head_dim % kKvTensorBoxElems != 0 || s.kv_heads <= 0 ||
      s.block_size <= 0 || s.block_size % kKvTensorBoxKeys != 0 || s.num_blocks <= 0 ||
      s.num_blocks > (int64_t{1} << 32) || s.row_bytes != int64_t{2} * s.head_dim ||
      s.block_bytes < s.row_bytes * s.kv_heads * s.block_size || s.block_bytes % 16 != 0) {
    return false;
  }
  const PFN_cuTensorMapEncodeTiled_v12000 encode = Encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(s.head_dim), static_cast<cuuint64_t>(s.kv_heads),
                              static_cast<cuuint64_t>(s.block_size), static_cast<cuuint64_t>(s.num_blocks)};
  // Bytes between consecutive heads, slots and pages (the first dimension's elements are adjacent).
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(s.row_bytes),
                                 static_cast<cuuint64_t>(s.row_bytes * s.kv_heads),
                                 static_cast<cuuint64_t>(s.block_bytes)};
  const cuuint32_t box[4] = {kKvTensorBoxElems, 1, kKvTensorBoxKeys, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, const_cast<void*>(pool), dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace kvs::cuda
