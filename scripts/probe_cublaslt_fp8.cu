// Which FP8 scale modes this GPU's cuBLASLt offers an algorithm for (device tool, one-off
// diagnostic for kernels/cuda/f8_gemm.cc): for each (A, B) pair of scale modes, the heuristic's
// answer for the TN FP8 GEMM kvshard issues (A = weights k x n, op T; B = activations k x m), asked
// with the scale pointers unset (as f8_gemm.cc first did) and set to device memory (as torch sets
// them before asking: cuBLASLt may refuse a block scale mode whose pointer is null).
// Build and run: nvcc -std=c++17 -o /tmp/probe scripts/probe_cublaslt_fp8.cu -lcublasLt -lcublas && /tmp/probe
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>

int main() {
  cublasLtHandle_t lt;
  cublasLtCreate(&lt);
  std::printf("cuBLASLt %zu\n", cublasLtGetVersion());
  const struct { int mode; const char* name; } modes[] = {
      {CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F, "SCALAR_32F"},
      {CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, "OUTER_VEC_32F"},
      {CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F, "VEC128_32F"},
      {CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, "BLK128x128_32F"}};
  const int shapes[][3] = {{64, 4096, 4096}, {36, 576, 1536}, {128, 14336, 4096}};
  void* scales = nullptr;
  cudaMalloc(&scales, 16 << 20);  // more than any shape's scales; never read by the heuristic
  for (int with_pointers = 0; with_pointers < 2; ++with_pointers)
  for (const auto& s : shapes) {
    const int m = s[0], n = s[1], k = s[2];
    for (const auto& ma : modes) {
      for (const auto& mb : modes) {
        for (int out_f32 = 0; out_f32 < 2; ++out_f32) {
          cublasLtMatmulDesc_t op;
          cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
          const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma.mode, sizeof(int));
          cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb.mode, sizeof(int));
          if (with_pointers) {
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scales, sizeof(scales));
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scales, sizeof(scales));
          }
          cublasLtMatrixLayout_t a, b, d;
          cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, k, n, k);
          cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, k, m, k);
          cublasLtMatrixLayoutCreate(&d, out_f32 ? CUDA_R_32F : CUDA_R_16BF, n, m, n);
          cublasLtMatmulPreference_t pref;
          cublasLtMatmulPreferenceCreate(&pref);
          size_t ws = 32 << 20;
          cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
          cublasLtMatmulHeuristicResult_t r{};
          int found = 0;
          const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, d, d, pref, 1, &r, &found);
          std::printf("%s m %4d n %5d k %5d  A %-15s B %-15s out %s: %s, %d found\n",
                      with_pointers ? "pointers set  " : "pointers unset", m, n, k, ma.name, mb.name,
                      out_f32 ? "f32 " : "bf16", cublasGetStatusString(st), found);
          cublasLtMatmulPreferenceDestroy(pref);
          cublasLtMatrixLayoutDestroy(a);
          cublasLtMatrixLayoutDestroy(b);
          cublasLtMatrixLayoutDestroy(d);
          cublasLtMatmulDescDestroy(op);
        }
      }
    }
  }
  cudaFree(scales);
  cublasLtDestroy(lt);
  return 0;
}
