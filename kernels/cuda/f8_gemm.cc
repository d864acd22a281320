#include "kernels/cuda/f8_gemm.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "kernels/cuda/cublas_status.h"

namespace kvs::cuda {
namespace {

// cuBLASLt objects that are released however a call ends.
struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~Desc() {
    if (d != nullptr) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() {
    if (l != nullptr) cublasLtMatrixLayoutDestroy(l);
  }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() {
    if (p != nullptr) cublasLtMatmulPreferenceDestroy(p);
  }
};

// The operation in cuBLAS's column-major terms: D (n x m) = W^T-stored-as-A (op T: A is k x n,
// the weights' rows w_ld apart) times B (k x m: the activations' rows), both k-major as FP8 requires
// ("TN"); D is out [m][n] row-major (ld out_stride).
struct Operation {
  Desc op;
  Layout a, b, d;
};
absl::Status Describe(int64_t m, int64_t n, int64_t k, int64_t w_ld, int64_t out_stride, bool f32_out, Operation& o) {
  Desc& op = o.op;
  Layout &a = o.a, &b = o.b, &d = o.d;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&op.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&a.l, CUDA_R_8F_E4M3, k, n, w_ld));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&b.l, CUDA_R_8F_E4M3, k, m, k));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&d.l, f32_out ? CUDA_R_32F : CUDA_R_16BF, n, m, out_stride));
  return absl::OkStatus();
}

std::atomic<int64_t> g_runs{0};
std::atomic<int64_t> g_refused{0};

}  // namespace

struct F8Gemm::Described : Operation {};

int64_t F8TensorCoreGemmsRun() { return g_runs.load(); }
int64_t F8TensorCoreShapesRefused() { return g_refused.load(); }

absl::StatusOr<F8Gemm> F8Gemm::Create(cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  F8Gemm g;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&g.lt_));
  g.stream_ = stream;
  g.workspace_ = workspace;
  g.workspace_bytes_ = workspace_bytes;
  return g;
}

F8Gemm::F8Gemm(F8Gemm&& other) noexcept { *this = std::move(other); }

F8Gemm& F8Gemm::operator=(F8Gemm&& other) noexcept {
  if (this != &other) {
    if (lt_ != nullptr) cublasLtDestroy(lt_);
    lt_ = std::exchange(other.lt_, nullptr);
    stream_ = other.stream_;
    workspace_ = other.workspace_;
    workspace_bytes_ = other.workspace_bytes_;
    plans_ = std::move(other.plans_);
  }
  return *this;
}

F8Gemm::~F8Gemm() {
  if (lt_ != nullptr) cublasLtDestroy(lt_);
}

absl::StatusOr<F8Gemm::Plan> F8Gemm::MakePlan(const Shape& shape) {
  const auto [m, n, k, w_ld, out_stride, f32_out] = shape;
  if (w_ld % 16 != 0) {  // FP8 operands need 16-byte aligned rows: not asked of cuBLASLt
    g_refused.fetch_add(1);
    std::fprintf(stderr,
                 "kvshard: FP8 GEMM operands need rows 16 bytes apart; F8_E4M3 weights of k %lld (rows %lld bytes "
                 "apart) multiply in bf16\n",
                 static_cast<long long>(k), static_cast<long long>(w_ld));
    return Plan{};
  }
  auto described = std::make_shared<Described>();
  KVS_RETURN_IF_ERROR(Describe(m, n, k, w_ld, out_stride, f32_out, *described));
  const Operation& o = *described;
  // Scale pointers before the question, as torch sets them: cuBLASLt 13.1 refuses every block
  // scale mode whose pointer is still null (INVALID_VALUE), and takes VEC128 x VEC128 once they are
  // set (scripts/probe_cublaslt_fp8.cu, H100). Any device memory will do: nothing is read until
  // Run points them at the call's scales.
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(o.op.d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &workspace_, sizeof(workspace_)));
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(o.op.d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &workspace_, sizeof(workspace_)));
  Preference pref;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref.p));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                  &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt_, o.op.d, o.a.l, o.b.l, o.d.l, o.d.l, pref.p, 1, &result, &found);
  Plan plan;
  if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
    plan.supported = true;
    plan.algo = result.algo;
    plan.described = std::move(described);
  } else {
    // NOT_SUPPORTED (cuBLASLt 13.1 on an H100: k = 384, n = 36 or 100, rows of 2,268), or
    // INVALID_VALUE where this cuBLASLt or GPU lacks the scale modes: the caller multiplies in bf16.
    g_refused.fetch_add(1);
    std::fprintf(stderr,
                 "kvshard: cuBLASLt has no FP8 block-scaled algorithm for m %lld, n %lld, k %lld, weight rows %lld "
                 "bytes apart (%s); F8_E4M3 weights of this shape multiply in bf16\n",
                 static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                 static_cast<long long>(w_ld), cublasGetStatusString(st));
  }
  return plan;
}

absl::StatusOr<const F8Gemm::Plan*> F8Gemm::FindPlan(const Shape& shape) {
  auto it = plans_.find(shape);
  if (it == plans_.end()) {
    KVS_ASSIGN_OR_RETURN(Plan plan, MakePlan(shape));
    it = plans_.emplace(shape, plan).first;
  }
  return &it->second;
}

absl::StatusOr<bool> F8Gemm::Supports(int64_t m, int64_t n, int64_t k, int64_t w_ld, int64_t out_stride, bool f32_out) {
  if (m % 4 != 0 || n % 4 != 0 || k % 128 != 0 || m <= 0 || n <= 0 || w_ld < k) return false;
  KVS_ASSIGN_OR_RETURN(const Plan* plan, FindPlan(Shape{m, n, k, w_ld, out_stride, f32_out}));
  return plan->supported;
}

absl::StatusOr<bool> F8Gemm::Run(const uint8_t* w, int64_t w_ld, const float* w_scale, int64_t n, const uint8_t* a,
                                 const float* a_scale, int64_t m, int64_t k, void* out, int64_t out_stride,
                                 bool f32_out) {
  if (m % 4 != 0 || n % 4 != 0 || k % 128 != 0 || m <= 0 || n <= 0 || w_ld < k) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "F8Gemm: m %d and n %d must be multiples of 4, k %d of 128, weight rows (%d bytes apart) at least k", m, n, k,
        w_ld));
  }
  KVS_ASSIGN_OR_RETURN(const Plan* plan, FindPlan(Shape{m, n, k, w_ld, out_stride, f32_out}));
  if (!plan->supported) return false;
  const Operation& o = *plan->described;
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(o.op.d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale)));
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(o.op.d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_scale, sizeof(a_scale)));
  const float alpha = 1.0f, beta = 0.0f;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(lt_, o.op.d, &alpha, w, o.a.l, a, o.b.l, &beta, out, o.d.l, out, o.d.l,
                                            &plan->algo, workspace_, workspace_bytes_, stream_));
  g_runs.fetch_add(1);
  return true;
}

}  // namespace kvs::cuda
