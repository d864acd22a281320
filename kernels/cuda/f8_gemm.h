// FP8 tensor-core GEMMs for F8_E4M3 block weights, through cuBLASLt with one f32 scale per 128
// elements along k on both operands (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, CUDA 12.9+): the
// weights' own block scales, and activations quantized per token and 128 columns
// (LaunchF8QuantizeActivations), as vLLM and SGLang run block-FP8 checkpoints on Hopper. cuBLASLt
// applies each block's scales to its partial sums in f32, so nothing accumulates in FP8 precision
// beyond one block.
//
// Shapes cuBLASLt has no algorithm for are reported as such (not an error), once per shape, and
// the caller keeps its bf16 path for them.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace kvs::cuda {

class F8Gemm {
 public:
  // cuBLASLt on `stream`, with `workspace` (device memory the caller keeps) for its kernels.
  static absl::StatusOr<F8Gemm> Create(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  F8Gemm(F8Gemm&& other) noexcept;
  F8Gemm& operator=(F8Gemm&& other) noexcept;
  ~F8Gemm();

  // out[t][j] = sum_k (a[t][k] a_scale[k / 128][t]) (w[j][k] w_scale[k / 128][j]) for t < m, j < n:
  // w E4M3 codes with rows w_ld bytes apart (the split rows of LaunchF8ArrangeRows: w_ld is their
  // row_bytes), a dense E4M3 codes (rows k apart), scales as LaunchF8GatherScales and
  // LaunchF8QuantizeActivations write them; out bf16, or f32 when f32_out, rows out_stride elements
  // apart. m and n multiples of 4, k of 128. Returns false where cuBLASLt has no algorithm for the
  // shape (nothing was written), true once queued.
  absl::StatusOr<bool> Run(const uint8_t* w, int64_t w_ld, const float* w_scale, int64_t n, const uint8_t* a,
                           const float* a_scale, int64_t m, int64_t k, void* out, int64_t out_stride, bool f32_out);
  // Whether Run has an algorithm for this shape (asked of cuBLASLt once per shape), so that a
  // caller can skip preparing operands cuBLASLt would refuse.
  absl::StatusOr<bool> Supports(int64_t m, int64_t n, int64_t k, int64_t w_ld, int64_t out_stride, bool f32_out);

 private:
  F8Gemm() = default;
  using Shape = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool>;  // m, n, k, w_ld, out_stride, f32_out
  struct Described;  // a shape's cuBLASLt operation and matrix layouts (f8_gemm.cc)
  struct Plan {
    bool supported = false;
    cublasLtMatmulAlgo_t algo{};
    std::shared_ptr<Described> described;  // kept: a call only points it at its scales
  };
  absl::StatusOr<Plan> MakePlan(const Shape& shape);
  absl::StatusOr<const Plan*> FindPlan(const Shape& shape);
  cublasLtHandle_t lt_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  absl::flat_hash_map<Shape, Plan> plans_;
};

// FP8 GEMMs queued by this process (tests check that the tensor cores did run).
int64_t F8TensorCoreGemmsRun();
// How many shapes cuBLASLt had no FP8 block-scaled algorithm for (each then multiplied in bf16).
int64_t F8TensorCoreShapesRefused();

}  // namespace kvs::cuda
