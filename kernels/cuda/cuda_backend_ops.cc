// CudaBackend's op set (kernels/backend_ops.h): checks dtypes and shapes, then launches the
// kernels of kernels/cuda/*.cu on the backend's stream. Memory, copies, moves and graphs are in
// cuda_backend.cc.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/common/cuda_status.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/status_macros.h"
#include "kernels/cuda/cublas_status.h"
#include "kernels/cuda/cuda_backend.h"

namespace kvs {
namespace {

using cuda::bf16;

absl::Status Require(const TensorView& t, DType dtype, const char* op, const char* what) {
  if (t.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s must be %s on the CUDA backend, got %s", op, what,
                                                      DTypeName(dtype), DTypeName(t.dtype)));
  }
  if (t.data == nullptr && t.NumElements() > 0)
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s has no data", op, what));
  return absl::OkStatus();
}

absl::Status Shape(bool ok, const char* op, const TensorView& a, const TensorView& b) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: shape mismatch: [%d, %d] vs [%d, %d]", op, a.rows, a.cols, b.rows, b.cols));
}

// "16, 32, 64": a head-dim table of cuda_kernels.h for a message.
template <typename Dims>
std::string JoinDims(const Dims& dims) {
  std::string out;
  for (int32_t d : dims) out += (out.empty() ? "" : ", ") + std::to_string(d);
  return out;
}

// Why the attention kernels cannot take caches of `t` at `head_dim`, naming what they can.
std::string CudaKvProblem(KvDType t, int32_t head_dim) {
  if (t == KvDType::kF32) return "f32 KV caches are CPU-only (CUDA: bf16, fp16, fp8, int8, int4-token, int4, int2)";
  if (KvChannelQuantized(t)) {
    return absl::StrFormat("the CUDA kernel for int4 / int2 KV takes head_dim %s; not %d",
                           JoinDims(cuda::kKiviHeadDims), head_dim);
  }
  return absl::StrFormat(
      "the CUDA attention kernels take head_dim %s and any multiple of 32 up to 256 (the last "
      "by the generic kernel) with a bf16 KV cache, and %s with fp16/fp8/int8/int4-token; not %d",
      JoinDims(cuda::kAttentionHeadDims), JoinDims(cuda::kEncodedKvHeadDims), head_dim);
}

absl::Status CheckCache(const PagedKvView& c, const char* op) {
  if (c.k == nullptr || c.v == nullptr || c.block_size <= 0 || c.kv_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: malformed KV cache view", op));
  }
  if (!cuda::AttentionSupports(c.dtype, c.head_dim)) {
    return absl::UnimplementedError(absl::StrFormat("%s: %s", op, CudaKvProblem(c.dtype, c.head_dim)));
  }
  return absl::OkStatus();
}

// Rope's operand `what`: bf16 x of `heads` heads of rope.head_dim (even) each.
absl::Status CheckRope(const TensorView& x, int32_t heads, const RopeTable& rope, const char* op, const char* what) {
  KVS_RETURN_IF_ERROR(Require(x, DType::kBF16, op, what));
  if (rope.head_dim <= 0 || rope.head_dim % 2 != 0 || x.cols != static_cast<int64_t>(heads) * rope.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d columns for %d heads of %d", op, x.cols, heads, rope.head_dim));
  }
  return absl::OkStatus();
}

// WriteKv's operands: bf16 k and v rows of the cache's slot width, as many of each.
absl::Status CheckKvRows(const TensorView& k, const TensorView& v, const PagedKvView& cache, const char* op) {
  KVS_RETURN_IF_ERROR(Require(k, DType::kBF16, op, "k"));
  KVS_RETURN_IF_ERROR(Require(v, DType::kBF16, op, "v"));
  KVS_RETURN_IF_ERROR(CheckCache(cache, op));
  return Shape(k.rows == v.rows && k.cols == cache.SlotStride() && v.cols == cache.SlotStride(), op, k, v);
}

}  // namespace

absl::Status CudaBackend::FillRandom(TensorView dst, uint64_t seed, float mean, float half_range, RandomWindow window) {
  ForgetRounding();
  if (!dst.IsContiguous()) return absl::InvalidArgumentError("FillRandom: dst must be contiguous");
  if (dst.dtype != DType::kBF16 && dst.dtype != DType::kF32)
    return absl::InvalidArgumentError("FillRandom: bf16 or f32 only");
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchFillRandom(dst.data, dst.dtype == DType::kBF16, dst.rows, dst.cols, seed, mean,
                                                  half_range, window.first, window.row_stride, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::ReserveWorkspace(int64_t max_tokens, int32_t max_seqs, int32_t q_heads, int32_t head_dim) {
  // Split-K partials are only worth it while sequences are few; 64 splits of a full decode
  // batch bound the workspace.
  constexpr int64_t kMaxSplits = 64;
  const int64_t floats = kMaxSplits * std::max<int64_t>(max_seqs, 1) * q_heads * head_dim;
  const int64_t ml_floats = kMaxSplits * std::max<int64_t>(max_tokens, max_seqs) * q_heads * 2;
  KVS_ASSIGN_OR_RETURN(workspace_, Allocate((floats + ml_floats) * sizeof(float)));
  attention_ws_.partial_out = workspace_.as<float>();
  attention_ws_.partial_ml = workspace_.as<float>() + floats;
  attention_ws_.capacity_floats = floats;
  if (keeps_blocks_) KVS_RETURN_IF_ERROR(EnsureBlockBuffers());
  return absl::OkStatus();
}

absl::Status CudaBackend::ReservePrefillKvScratch(KvDType dtype, int32_t block_size, int32_t kv_heads, int32_t head_dim,
                                                  int64_t max_context) {
  const int64_t bytes = cuda::PrefillKvScratchBytes(dtype, block_size, kv_heads, head_dim, max_context);
  if (bytes <= attention_ws_.kv_scratch_bytes) return absl::OkStatus();
  absl::StatusOr<DeviceBuffer> buf = Allocate(static_cast<size_t>(bytes));
  if (!buf.ok()) {
    cudaGetLastError();  // an out-of-memory allocation leaves nothing behind
    std::fprintf(stderr,
                 "kvshard: no room for %.0f MiB of prefill scratch (%s); prefill over the %s KV cache decodes its "
                 "pages inside the attention kernel, which is slower\n",
                 bytes / 1048576.0, std::string(buf.status().message()).c_str(),
                 std::string(KvDTypeName(dtype)).c_str());
    return absl::OkStatus();
  }
  prefill_kv_scratch_ = std::move(*buf);
  attention_ws_.kv_scratch = prefill_kv_scratch_.data();
  attention_ws_.kv_scratch_bytes = bytes;
  return absl::OkStatus();
}

absl::Status CudaBackend::ArrangeBlocks(GgmlType type, void* data, int64_t rows, int64_t cols) {
  ForgetRounding();
  if (cuda::SplitsRows(type)) {
    const auto info = LookupGgmlType(static_cast<uint32_t>(type));
    const int64_t row_bytes = cols / info->block_elems * info->block_bytes;
    if (cols % info->block_elems != 0 || row_bytes > cuda::kSplitRowsMaxRowBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s weights of %d columns: the CUDA backend takes rows of whole blocks up to %d bytes",
                          info->name, cols, cuda::kSplitRowsMaxRowBytes));
    }
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchSplitRows(type, data, rows, cols, stream_));
    return absl::OkStatus();
  }
  if (type != GgmlType::kF8_E4M3) return absl::OkStatus();
  const int64_t row_bytes = cols / kF8BlockElems * (kF8BlockElems + 4);
  if (cols % kF8BlockElems != 0 || row_bytes > cuda::kSplitRowsMaxRowBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "F8_E4M3 weights of %d columns: the CUDA backend takes rows of whole 128-column blocks up to %d bytes", cols,
        cuda::kSplitRowsMaxRowBytes));
  }
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchF8ArrangeRows(data, row_bytes, rows, cols, stream_));
  return absl::OkStatus();
}

bool CudaBackend::LinearTakesBlocks(GgmlType type) const {
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  const bool takes = info.has_value() && info->block_elems >= 32;
  keeps_blocks_ = keeps_blocks_ || takes;
  keeps_f8_ = keeps_f8_ || type == GgmlType::kF8_E4M3;
  keeps_ggml_ = keeps_ggml_ || (takes && type != GgmlType::kF8_E4M3);
  return takes;
}

namespace {
// Whether t's rows and the `bytes` at p share a byte.
bool Overlap(const TensorView& t, const void* p, int64_t bytes) {
  const auto* a = static_cast<const std::byte*>(t.data);
  const auto* b = static_cast<const std::byte*>(p);
  return a < b + bytes && b < a + t.BytesOf(t.rows * t.stride);
}
}  // namespace

bool CudaBackend::HoldsRounding(const TensorView& x, bool gemv_order) const {
  return held_rounding_.has_value() && held_rounding_->data == x.data && held_rounding_->rows == x.rows &&
         held_rounding_->cols == x.cols && held_rounding_->stride == x.stride &&
         held_rounding_->gemv_order == gemv_order;
}

absl::Status CudaBackend::EnsureBlockBuffers() {
  const bool need_f8 = keeps_f8_ && !f8_gemm_.has_value();
  if (gemv_activations_.data() != nullptr && !need_f8) return absl::OkStatus();
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream_, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) {
    return absl::FailedPreconditionError("Linear: weights in blocks need ReserveWorkspace before a graph is captured");
  }
  if (need_f8) {
    KVS_ASSIGN_OR_RETURN(f8_activations_, Allocate(kF8ActivationBytes));
    KVS_ASSIGN_OR_RETURN(auto gemm, cuda::F8Gemm::Create(stream_, cublas_workspace_.data(), kCublasWorkspaceBytes));
    f8_gemm_.emplace(std::move(gemm));
  }
  if (gemv_activations_.data() != nullptr) return absl::OkStatus();
  const int64_t t = std::max(cuda::kBlockGemvMaxTokens, cuda::kBlockGemmMaxTokens), k = kGemvMaxK;
  // q, then d (per 32), then sum16 (per 16): each part 16-byte aligned.
  KVS_ASSIGN_OR_RETURN(gemv_activations_, Allocate(t * k + t * (k / 32) * 4 + t * (k / 16) * 4));
  gemv_a_.q = gemv_activations_.as<int8_t>();
  gemv_a_.d = reinterpret_cast<float*>(gemv_a_.q + t * k);
  gemv_a_.sum16 = gemv_a_.d + t * (k / 32);
  KVS_ASSIGN_OR_RETURN(block_tile_, Allocate(kBlockTileBytes));
  return absl::OkStatus();
}

absl::Status CudaBackend::LinearBlocks(TensorView x, TensorView w, TensorView out) {
  KVS_RETURN_IF_ERROR(EnsureBlockBuffers());
  const int64_t row_bytes = w.BytesOf(w.stride), k = w.cols;
  if (w.blocks == GgmlType::kF8_E4M3 && x.rows <= cuda::kBlockGemvMaxTokens) {  // bf16 activations as they are
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchF8Gemv(w.data, row_bytes, w.rows, k, static_cast<const bf16*>(x.data),
                                                x.stride, x.rows, out.data, out.stride, out.dtype == DType::kF32,
                                                stream_));
    return absl::OkStatus();
  }
  // The activations rounded once for every matrix (and part) that reads them: held_rounding_.
  auto round = [&](bool gemv_order) -> absl::Status {
    if (HoldsRounding(x, gemv_order)) return absl::OkStatus();
    ForgetRounding();
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchQuantizeActivations(static_cast<const bf16*>(x.data), x.stride, x.rows, k,
                                                             gemv_a_, gemv_order, stream_));
    NoteRounding(x, gemv_order);
    return absl::OkStatus();
  };
  if (x.rows <= cuda::kBlockGemvMaxTokens && k <= kGemvMaxK) {
    KVS_RETURN_IF_ERROR(round(/*gemv_order=*/true));
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchBlockGemv(w.blocks, w.data, row_bytes, w.rows, k, gemv_a_, x.rows, out.data,
                                                   out.stride, out.dtype == DType::kF32, stream_));
    return absl::OkStatus();
  }
  if (w.blocks == GgmlType::kF8_E4M3 && cuda::UseF8TensorCores()) {
    KVS_ASSIGN_OR_RETURN(const bool done, LinearF8TensorCores(x, w, out));
    if (done) return absl::OkStatus();
  }
  if (w.blocks != GgmlType::kF8_E4M3 && k <= kGemvMaxK && cuda::UseBlockGemm(x.rows)) {
    KVS_RETURN_IF_ERROR(round(/*gemv_order=*/false));
    // The block tile (the bf16 tiles' buffer, idle here) holds the splits' partial sums.
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchBlockGemm(
        w.blocks, w.data, row_bytes, w.rows, k, gemv_a_, x.rows, out.data, out.stride, out.dtype == DType::kF32,
        static_cast<float*>(block_tile_.data()), static_cast<int64_t>(kBlockTileBytes / sizeof(float)), stream_));
    return absl::OkStatus();
  }
  return LinearBf16Tiles(x, w, out);
}

absl::StatusOr<bool> CudaBackend::LinearF8TensorCores(TensorView x, TensorView w, TensorView out) {
  const int64_t k = w.cols, row_bytes = w.BytesOf(w.stride), scale_bytes = k / kF8BlockElems * 4;
  // Chunks of tokens (activation codes and scales in one buffer) and tiles of weight rows (their
  // gathered scales in the block tile); multiples of 4 (cuBLASLt's scale vectors), as is every
  // real model's row count. The weights' codes are read where they lie (split rows,
  // LaunchF8ArrangeRows). Tiles of whole 128 rows where a tile is not the whole matrix: cuBLASLt
  // 13.1 (H100) refused tiles of 2,268 or 7,940 rows as NOT_SUPPORTED.
  const int64_t chunk = static_cast<int64_t>(kF8ActivationBytes) / (k + scale_bytes) / 4 * 4;
  int64_t tile = static_cast<int64_t>(kBlockTileBytes) / scale_bytes / 4 * 4;
  if (tile < w.rows && tile >= 128) tile = tile / 128 * 128;
  const int64_t m4 = x.rows / 4 * 4;
  if (!f8_gemm_.has_value() || w.rows % 4 != 0 || chunk < 4 || tile < 4 || m4 == 0) return false;
  const bool f32_out = out.dtype == DType::kF32;
  // Where cuBLASLt refuses the first chunk's and tile's shape (rows not 16-byte aligned among
  // them: k not a multiple of 512), nothing is prepared and the caller takes the bf16 tiles.
  KVS_ASSIGN_OR_RETURN(const bool supported, f8_gemm_->Supports(std::min(chunk, m4), std::min(tile, w.rows), k,
                                                                row_bytes, out.stride, f32_out));
  if (!supported) return false;
  auto* a_codes = f8_activations_.as<uint8_t>();
  auto* w_scales = static_cast<float*>(block_tile_.data());
  for (int64_t t0 = 0; t0 < m4; t0 += chunk) {
    const int64_t m = std::min(chunk, m4 - t0);
    auto* a_scales = reinterpret_cast<float*>(a_codes + m * k);
    const TensorView xs = x.Rows(t0, m), outs = out.Rows(t0, m);
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchF8QuantizeActivations(static_cast<const bf16*>(xs.data), xs.stride, m, k,
                                                               a_codes, a_scales, stream_));
    for (int64_t r0 = 0; r0 < w.rows; r0 += tile) {
      const int64_t rows = std::min(tile, w.rows - r0);
      const TensorView ws = w.Rows(r0, rows);
      KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchF8GatherScales(ws.data, row_bytes, rows, k, w_scales, stream_));
      const TensorView o = outs.Cols(r0, rows);
      KVS_ASSIGN_OR_RETURN(const bool ran, f8_gemm_->Run(static_cast<const uint8_t*>(ws.data), row_bytes, w_scales,
                                                         rows, a_codes, a_scales, m, k, o.data, o.stride, f32_out));
      // A shape cuBLASLt has no algorithm for: these rows in bf16 (the first tile and chunk of a
      // shape decide, so this is the rare odd tail).
      if (!ran) KVS_RETURN_IF_ERROR(LinearBf16Tiles(xs, ws, o));
    }
  }
  if (m4 < x.rows) {  // the last 1 to 3 tokens
    const TensorView xs = x.Rows(m4, x.rows - m4), o = out.Rows(m4, x.rows - m4);
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchF8Gemv(w.data, row_bytes, w.rows, k, static_cast<const bf16*>(xs.data),
                                                xs.stride, xs.rows, o.data, o.stride, f32_out, stream_));
  }
  return true;
}

absl::Status CudaBackend::LinearBf16Tiles(TensorView x, TensorView w, TensorView out) {
  const int64_t row_bytes = w.BytesOf(w.stride), k = w.cols;
  const int64_t tile_rows = std::max<int64_t>(1, static_cast<int64_t>(kBlockTileBytes / sizeof(bf16)) / k);
  if (tile_rows * k * static_cast<int64_t>(sizeof(bf16)) > static_cast<int64_t>(kBlockTileBytes)) {
    return absl::InvalidArgumentError(absl::StrFormat("Linear: a row of %d weights exceeds the block tile", k));
  }
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, w.rows - r0);
    // Kept weights are in this backend's layout (ArrangeBlocks), not necessarily the file's.
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchDequantizeKept(w.blocks, w.Rows(r0, rows).data, row_bytes, rows, k,
                                                        block_tile_.data(), /*f32_out=*/false, stream_));
    KVS_RETURN_IF_ERROR(Gemm(x, TensorView::Contiguous(block_tile_.data(), DType::kBF16, rows, k), out.Cols(r0, rows)));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Embedding(const int32_t* ids, TensorView table, int32_t first_id, TensorView out) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(out, DType::kF32, "Embedding", "out"));
  KVS_RETURN_IF_ERROR(Shape(table.cols == out.cols && table.IsContiguous(), "Embedding", table, out));
  if (table.dtype == DType::kBlocks && LinearTakesBlocks(table.blocks)) {
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchEmbeddingBlocks(table.blocks, ids, out.rows, table.data,
                                                         table.BytesOf(table.stride), first_id, table.rows, table.cols,
                                                         static_cast<float*>(out.data), out.stride, stream_));
    return absl::OkStatus();
  }
  KVS_RETURN_IF_ERROR(Require(table, DType::kBF16, "Embedding", "table"));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchEmbedding(ids, out.rows, static_cast<const bf16*>(table.data), first_id,
                                                 table.rows, table.cols, static_cast<float*>(out.data), out.stride,
                                                 stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::RmsNorm(TensorView x, TensorView weight, float eps, TensorView out) {
  ForgetRounding();
  if (x.dtype == DType::kBF16) {  // a bf16 row (Gemma's post-attention / post-MLP norms)
    KVS_RETURN_IF_ERROR(Require(weight, DType::kBF16, "RmsNorm", "weight"));
    KVS_RETURN_IF_ERROR(Require(out, DType::kBF16, "RmsNorm", "out"));
    KVS_RETURN_IF_ERROR(
        Shape(x.rows == out.rows && x.cols == out.cols && weight.NumElements() == x.cols && x.cols <= (1 << 30),
              "RmsNorm", x, out));
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchRmsNormBf16(
        static_cast<const bf16*>(x.data), x.stride, x.rows, 1, static_cast<int32_t>(x.cols),
        static_cast<const bf16*>(weight.data), eps, static_cast<bf16*>(out.data), out.stride, stream_));
    return absl::OkStatus();
  }
  KVS_RETURN_IF_ERROR(Require(x, DType::kF32, "RmsNorm", "x"));
  KVS_RETURN_IF_ERROR(Require(weight, DType::kBF16, "RmsNorm", "weight"));
  KVS_RETURN_IF_ERROR(Require(out, DType::kBF16, "RmsNorm", "out"));
  KVS_RETURN_IF_ERROR(Shape(x.rows == out.rows && x.cols == out.cols && weight.cols == x.cols, "RmsNorm", x, out));
  bool rounded = false;
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchRmsNorm(
      static_cast<const float*>(x.data), x.stride, static_cast<const bf16*>(weight.data), x.rows, x.cols, eps,
      static_cast<bf16*>(out.data), out.stride, stream_, ProducerRounding(out), &rounded));
  ProducerWrote(out, rounded);
  return absl::OkStatus();
}

absl::Status CudaBackend::HeadRmsNorm(TensorView x, int32_t heads, TensorView weight, float eps) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(x, DType::kBF16, "HeadRmsNorm", "x"));
  KVS_RETURN_IF_ERROR(Require(weight, DType::kBF16, "HeadRmsNorm", "weight"));
  KVS_RETURN_IF_ERROR(
      Shape(heads > 0 && x.cols == static_cast<int64_t>(heads) * weight.NumElements(), "HeadRmsNorm", x, weight));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchRmsNormBf16(
      static_cast<const bf16*>(x.data), x.stride, x.rows, heads, static_cast<int32_t>(weight.NumElements()),
      static_cast<const bf16*>(weight.data), eps, static_cast<bf16*>(x.data), x.stride, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Scale(TensorView x, float s) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(x, DType::kF32, "Scale", "x"));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchScale(static_cast<float*>(x.data), x.stride, x.rows, x.cols, s, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::AddRmsNorm(TensorView residual, TensorView x, TensorView weight, float eps, TensorView out) {
  KVS_RETURN_IF_ERROR(Require(residual, DType::kF32, "AddRmsNorm", "residual"));
  KVS_RETURN_IF_ERROR(Require(x, DType::kBF16, "AddRmsNorm", "x"));
  KVS_RETURN_IF_ERROR(Require(weight, DType::kBF16, "AddRmsNorm", "weight"));
  KVS_RETURN_IF_ERROR(Require(out, DType::kBF16, "AddRmsNorm", "out"));
  KVS_RETURN_IF_ERROR(Shape(residual.rows == x.rows && residual.cols == x.cols && out.rows == x.rows &&
                                out.cols == x.cols && weight.cols == x.cols,
                            "AddRmsNorm", residual, x));
  bool rounded = false;
  ForgetRounding();
  KVS_CUDA_RETURN_IF_ERROR(
      cuda::LaunchAddRmsNorm(static_cast<float*>(residual.data), residual.stride, static_cast<const bf16*>(x.data),
                             x.stride, static_cast<const bf16*>(weight.data), x.rows, x.cols, eps,
                             static_cast<bf16*>(out.data), out.stride, stream_, ProducerRounding(out), &rounded));
  ProducerWrote(out, rounded);
  return absl::OkStatus();
}

absl::Status CudaBackend::Gemm(TensorView x, TensorView w, TensorView out) {
  // Row-major out[T, N] = x[T, K] w[N, K]^T is column-major out^T[N, T]: cuBLAS sees w as a
  // column-major [K, N] matrix (transposed) and x as a column-major [K, T] matrix.
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType_t out_type = out.dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(x.rows), static_cast<int>(x.cols),
      &alpha, w.data, CUDA_R_16BF, static_cast<int>(w.cols), x.data, CUDA_R_16BF, static_cast<int>(x.stride), &beta,
      out.data, out_type, static_cast<int>(out.stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

absl::Status CudaBackend::Linear(TensorView x, TensorView w, TensorView bias, TensorView out) {
  KVS_RETURN_IF_ERROR(Require(x, DType::kBF16, "Linear", "x"));
  const bool blocks = w.dtype == DType::kBlocks && LinearTakesBlocks(w.blocks);
  if (!blocks) KVS_RETURN_IF_ERROR(Require(w, DType::kBF16, "Linear", "w"));
  if (out.dtype != DType::kBF16 && out.dtype != DType::kF32) {
    return absl::InvalidArgumentError("Linear: out must be bf16 or f32 on the CUDA backend");
  }
  KVS_RETURN_IF_ERROR(
      Shape(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows && w.IsContiguous(), "Linear", x, w));
  if (x.rows == 0) return absl::OkStatus();
  // A Linear writing over the activations whose rounding is held (none of the runner's do).
  if (held_rounding_.has_value() &&
      Overlap(out, held_rounding_->data,
              held_rounding_->rows * held_rounding_->stride * static_cast<int64_t>(sizeof(bf16)))) {  // bf16 rows
    ForgetRounding();
  }
  // bf16 weights: the decode GEMV where it takes the shape, cuBLAS for the rest.
  if (blocks) {
    KVS_RETURN_IF_ERROR(LinearBlocks(x, w, out));
  } else if (cuda::Bf16GemvTakes(w.data, w.rows, w.cols, x.data, x.stride, x.rows)) {
    KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchBf16Gemv(static_cast<const bf16*>(w.data), w.rows, w.cols,
                                                  static_cast<const bf16*>(x.data), x.stride, x.rows, out.data,
                                                  out.stride, out.dtype == DType::kF32, stream_));
  } else {
    KVS_RETURN_IF_ERROR(Gemm(x, w, out));
  }
  if (bias.data != nullptr) {
    KVS_RETURN_IF_ERROR(Require(bias, DType::kBF16, "Linear", "bias"));
    if (bias.NumElements() != w.rows)
      return absl::InvalidArgumentError("Linear: bias size differs from output features");
    if (out.dtype == DType::kF32) {
      KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchAddBiasF32(static_cast<float*>(out.data), out.stride, out.rows, out.cols,
                                                      static_cast<const bf16*>(bias.data), stream_));
    } else {
      KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchAddBias(static_cast<bf16*>(out.data), out.stride, out.rows, out.cols,
                                                   static_cast<const bf16*>(bias.data), stream_));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Rope(TensorView x, int32_t heads, const int32_t* positions, RopeTable rope) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(CheckRope(x, heads, rope, "Rope", "x"));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchRope(static_cast<bf16*>(x.data), x.stride, x.rows, heads, rope.head_dim,
                                            positions, rope.inv_freq, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::WriteKv(TensorView k, TensorView v, const int32_t* slot_mapping, PagedKvView cache) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(CheckKvRows(k, v, cache, "WriteKv"));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchWriteKv(static_cast<const bf16*>(k.data), k.stride,
                                               static_cast<const bf16*>(v.data), v.stride, k.rows, slot_mapping, cache,
                                               stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::RopeWriteKv(TensorView qk, int32_t heads, const int32_t* positions, RopeTable rope,
                                      TensorView k, TensorView v, const int32_t* slot_mapping, PagedKvView cache) {
  const bool k_is_qks_last_heads =
      heads >= cache.kv_heads && k.dtype == qk.dtype && k.stride == qk.stride && k.rows == qk.rows &&
      k.data == static_cast<bf16*>(qk.data) + static_cast<int64_t>(heads - cache.kv_heads) * cache.head_dim;
  if ((cache.dtype != KvDType::kBF16 && cache.dtype != KvDType::kF16) || rope.head_dim != cache.head_dim ||
      !k_is_qks_last_heads) {
    return Backend::RopeWriteKv(qk, heads, positions, rope, k, v, slot_mapping, cache);
  }
  ForgetRounding();
  KVS_RETURN_IF_ERROR(CheckRope(qk, heads, rope, "RopeWriteKv", "qk"));
  KVS_RETURN_IF_ERROR(CheckKvRows(k, v, cache, "RopeWriteKv"));
  KVS_CUDA_RETURN_IF_ERROR(
      cuda::LaunchRopeWriteKv(static_cast<bf16*>(qk.data), qk.stride, qk.rows, heads, rope.head_dim, positions,
                              rope.inv_freq, static_cast<const bf16*>(v.data), v.stride, slot_mapping, cache, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::SealKvGroups(TensorView k, TensorView v, const AttentionBatch& batch, PagedKvView cache) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(k, DType::kBF16, "SealKvGroups", "k"));
  KVS_RETURN_IF_ERROR(Require(v, DType::kBF16, "SealKvGroups", "v"));
  KVS_RETURN_IF_ERROR(CheckCache(cache, "SealKvGroups"));
  if (!KvChannelQuantized(cache.dtype) || batch.sealed == nullptr || k.rows != batch.num_tokens || v.rows != k.rows ||
      k.cols != cache.SlotStride() || v.cols != cache.SlotStride()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SealKvGroups: k [%d, %d] v [%d, %d] for %d tokens, %s cache (%s sealed positions)", k.rows, k.cols, v.rows,
        v.cols, batch.num_tokens, KvDTypeName(cache.dtype), batch.sealed ? "with" : "no"));
  }
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchSealKvGroups(static_cast<const bf16*>(k.data), k.stride,
                                                    static_cast<const bf16*>(v.data), v.stride, batch, cache, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::PagedAttention(TensorView q, PagedKvView cache, const AttentionBatch& batch, float scale,
                                         TensorView out) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(q, DType::kBF16, "PagedAttention", "q"));
  KVS_RETURN_IF_ERROR(Require(out, DType::kBF16, "PagedAttention", "out"));
  KVS_RETURN_IF_ERROR(CheckCache(cache, "PagedAttention"));
  const int64_t q_heads = q.cols / cache.head_dim;
  KVS_RETURN_IF_ERROR(Shape(q.cols % cache.head_dim == 0 && q_heads % cache.kv_heads == 0 && out.rows == q.rows &&
                                out.cols == q.cols && batch.num_tokens == q.rows,
                            "PagedAttention", q, out));
  if (attention_ws_.partial_out == nullptr) {
    return absl::FailedPreconditionError("PagedAttention: ReserveWorkspace was not called");
  }
  if (cache.window > 0) {
    if (std::string problem = AttentionWindowProblem(cache.dtype, cache.head_dim); !problem.empty()) {
      return absl::UnimplementedError("PagedAttention: " + problem);
    }
  }
  bool rounded = false;
  const cudaError_t err = cuda::LaunchPagedAttention(
      static_cast<const bf16*>(q.data), q.stride, static_cast<int32_t>(q_heads), cache, batch, scale,
      static_cast<bf16*>(out.data), out.stride, attention_ws_, stream_, ProducerRounding(out), &rounded);
  if (err == cudaErrorInvalidValue) {
    return absl::UnimplementedError(absl::StrFormat("PagedAttention: %s", CudaKvProblem(cache.dtype, cache.head_dim)));
  }
  KVS_CUDA_RETURN_IF_ERROR(err);
  ProducerWrote(out, rounded);
  return absl::OkStatus();
}

absl::Status CudaBackend::SwiGlu(TensorView gate_up, TensorView out) {
  KVS_RETURN_IF_ERROR(Require(gate_up, DType::kBF16, "SwiGlu", "gate_up"));
  KVS_RETURN_IF_ERROR(Require(out, DType::kBF16, "SwiGlu", "out"));
  KVS_RETURN_IF_ERROR(Shape(gate_up.cols == 2 * out.cols && gate_up.rows == out.rows, "SwiGlu", gate_up, out));
  bool rounded = false;
  ForgetRounding();
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchSwiGlu(static_cast<const bf16*>(gate_up.data), gate_up.stride, out.rows,
                                              out.cols, static_cast<bf16*>(out.data), out.stride, stream_,
                                              ProducerRounding(out), &rounded));
  ProducerWrote(out, rounded);

  return absl::OkStatus();
}

absl::Status CudaBackend::GeluGlu(TensorView gate_up, TensorView out) {
  KVS_RETURN_IF_ERROR(Require(gate_up, DType::kBF16, "GeluGlu", "gate_up"));
  KVS_RETURN_IF_ERROR(Require(out, DType::kBF16, "GeluGlu", "out"));
  KVS_RETURN_IF_ERROR(Shape(gate_up.cols == 2 * out.cols && gate_up.rows == out.rows, "GeluGlu", gate_up, out));
  bool rounded = false;
  ForgetRounding();
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchGeluGlu(static_cast<const bf16*>(gate_up.data), gate_up.stride, out.rows,
                                               out.cols, static_cast<bf16*>(out.data), out.stride, stream_,
                                               ProducerRounding(out), &rounded));
  ProducerWrote(out, rounded);

  return absl::OkStatus();
}

absl::StatusOr<bool> CudaBackend::GatedLinear(TensorView x, TensorView w, bool gelu, TensorView out) {
  // One token of bf16 weights, bf16 in and out (the kernels bf16 decode steps take: other weights
  // keep the two ops, cuda_kernels.h); not where the next GEMV reads rounded activations (SwiGlu
  // rounds them as it writes: ProducerRounding).
  if (!cuda::GatedGemvOn() || x.rows != 1 || out.rows != 1 || x.dtype != DType::kBF16 || out.dtype != DType::kBF16 ||
      w.dtype != DType::kBF16 || w.cols != x.cols || w.rows != 2 * out.cols || !w.IsContiguous() ||
      ProducerRounding(out) != nullptr || !cuda::Bf16GemvTakes(w.data, w.rows, w.cols, x.data, x.stride, 1)) {
    return false;
  }
  const auto act = gelu ? cuda::GatedActivation::kGeluTanh : cuda::GatedActivation::kSilu;
  const cudaError_t err =
      cuda::LaunchBf16GatedGemv(static_cast<const bf16*>(w.data), out.cols, w.cols, static_cast<const bf16*>(x.data),
                                act, static_cast<bf16*>(out.data), stream_);
  if (err == cudaErrorInvalidValue) return false;  // a shape the kernel does not take; nothing launched
  KVS_CUDA_RETURN_IF_ERROR(err);
  ForgetRounding();  // out's old contents
  return true;
}

absl::Status CudaBackend::GatherRows(TensorView x, const int32_t* rows, TensorView out) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Shape(x.cols == out.cols && x.dtype == out.dtype, "GatherRows", x, out));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchGatherRows(x.data, x.stride, rows, out.rows, x.cols,
                                                  static_cast<int32_t>(DTypeSize(x.dtype)), out.data, out.stride,
                                                  stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::ArgmaxRows(TensorView logits, int32_t first_id, int32_t* ids, float* values) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(logits, DType::kF32, "ArgmaxRows", "logits"));
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchArgmaxRows(static_cast<const float*>(logits.data), logits.stride, logits.rows,
                                                  logits.cols, first_id, ids, values, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Dequantize(GgmlType type, const void* src, int64_t src_stride, TensorView out) {
  ForgetRounding();
  if (out.dtype != DType::kBF16 && out.dtype != DType::kF32)
    return absl::InvalidArgumentError("Dequantize: out must be bf16 or f32");
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  if (!info) return absl::InvalidArgumentError("Dequantize: unknown GGML type");
  if (!cuda::DequantizeSupports(type)) {
    return absl::UnimplementedError(
        absl::StrFormat("Dequantize: no device decoder for %s (decode it on the host)", info->name));
  }
  if (out.cols % info->block_elems != 0 || out.stride != out.cols) {
    return absl::InvalidArgumentError(absl::StrFormat("Dequantize: %d columns of %s in %d-element blocks, contiguous",
                                                      out.cols, info->name, info->block_elems));
  }
  if (src_stride < out.cols / info->block_elems * info->block_bytes) {
    return absl::InvalidArgumentError("Dequantize: rows overlap (stride < row bytes)");
  }
  KVS_CUDA_RETURN_IF_ERROR(
      cuda::LaunchDequantize(type, src, src_stride, out.rows, out.cols, out.data, out.dtype == DType::kF32, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::SampleRows(TensorView logits, const SampleRequest* requests, int32_t count, int32_t* ids) {
  ForgetRounding();
  KVS_RETURN_IF_ERROR(Require(logits, DType::kF32, "SampleRows", "logits"));
  if (count < 0) return absl::InvalidArgumentError("SampleRows: negative request count");
  KVS_CUDA_RETURN_IF_ERROR(cuda::LaunchSampleRows(static_cast<const float*>(logits.data), logits.stride,
                                                  static_cast<int32_t>(logits.rows), static_cast<int32_t>(logits.cols),
                                                  requests, count, ids, stream_));
  return absl::OkStatus();
}

std::string CudaBackend::AttentionWindowProblem(KvDType t, int32_t head_dim) const {
  if (cuda::WindowAttentionSupports(t, head_dim) || cuda::KiviAttentionSupports(t, head_dim)) return "";
  return absl::StrFormat(
      "the CUDA kernels for sliding-window layers take bf16 caches with head_dim a multiple of 32 "
      "up to 256, and int4 / int2 caches with head_dim %s (asked: --kv-dtype %s, head_dim %d)",
      JoinDims(cuda::kKiviHeadDims), KvDTypeName(t), head_dim);
}

std::string CudaBackend::KvDTypeProblem(KvDType t, int32_t head_dim) const {
  return cuda::AttentionSupports(t, head_dim) ? "" : CudaKvProblem(t, head_dim);
}

}  // namespace kvs
