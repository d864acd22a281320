#include "kernels/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_format.h"
#include "kernels/backend_factory.h"
#include "kernels/common/ggml_decode.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/sampling.h"
#include "kernels/common/thread_pool.h"
#include "kernels/cpu/block_matmul.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kvs {
namespace {

constexpr std::align_val_t kAlignment{64};

absl::Status RequireF32(const TensorView& t, const char* op, const char* what) {
  if (t.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s must be f32 on the CPU backend, got %s",
                                                      op, what, DTypeName(t.dtype)));
  }
  if (t.data == nullptr && t.NumElements() > 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s has no data", op, what));
  }
  return absl::OkStatus();
}

// `detail` is formatted only when the check fails: the ops run it per layer and step, and a
// string formatted each time took 0.7% of a 2-thread SmolLM2 decode (perf), on the thread that the
// pool waits on.
absl::Status RequireShape(bool ok, const char* op, absl::FunctionRef<std::string()> detail) {
  if (!ok) return absl::InvalidArgumentError(absl::StrFormat("%s: shape mismatch: %s", op, detail()));
  return absl::OkStatus();
}

std::string Shape(const TensorView& t) { return absl::StrFormat("[%d, %d]", t.rows, t.cols); }

// SwiGLU and GeGLU: out = act(gate) * up over gate_up [T, 2I] -> out [T, I], checked alike.
using GatedFn = void (*)(const float*, int64_t, int64_t, int64_t, float*, int64_t);
absl::Status GatedActivation(TensorView gate_up, TensorView out, const char* op, GatedFn fn) {
  KVS_RETURN_IF_ERROR(RequireF32(gate_up, op, "gate_up"));
  KVS_RETURN_IF_ERROR(RequireF32(out, op, "out"));
  KVS_RETURN_IF_ERROR(RequireShape(gate_up.cols == 2 * out.cols && gate_up.rows == out.rows, op,
                                   [&] { return Shape(gate_up) + " vs " + Shape(out); }));
  fn(static_cast<const float*>(gate_up.data), gate_up.stride, out.rows, out.cols, static_cast<float*>(out.data),
     out.stride);
  return absl::OkStatus();
}

absl::Status CheckCache(const PagedKvView& cache, const char* op) {
  if (cache.k == nullptr || cache.v == nullptr || cache.block_size <= 0 || cache.kv_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: malformed KV cache view", op));
  }
  if (const char* problem = KvDTypeHeadDimProblem(cache.dtype, cache.head_dim)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s KV cache with head_dim %d: %s", op,
                                                      KvDTypeName(cache.dtype), cache.head_dim, problem));
  }
  return absl::OkStatus();
}

}  // namespace

size_t DefaultCpuMemoryBudget() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  return static_cast<size_t>(pages) * static_cast<size_t>(page_size) / 2;
}

CpuBackend::CpuBackend(size_t memory_budget_bytes, CpuMath math) : budget_(memory_budget_bytes), math_(math) {}

bool CpuBackend::LinearTakesBlocks(GgmlType type) const {
  return math_ == CpuMath::kFast && cpu::BlockMatMulSupports(type);
}

absl::StatusOr<DeviceBuffer> CpuBackend::Allocate(size_t bytes) {
  if (bytes == 0) return DeviceBuffer();
  if (used_.load() + bytes > budget_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cpu backend: cannot allocate %d bytes: %d of the %d-byte budget are in use", bytes,
        used_.load(), budget_));
  }
  void* p = ::operator new(bytes, kAlignment, std::nothrow);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat("cpu backend: out of memory for %d bytes", bytes));
  }
  used_ += bytes;
  return DeviceBuffer(this, p, bytes);
}

absl::StatusOr<DeviceBuffer> CpuBackend::AllocateWithHostTail(size_t device_bytes, size_t host_bytes,
                                                            HostTailWindow window) {
  if (host_bytes == 0 && window.bytes == 0) return Allocate(device_bytes);
  size_t total = device_bytes + host_bytes;
  if (window.bytes > 0) {
    // Each buffer's own window (see Backend::AllocateWithHostTail): heap memory outside the
    // budget, like the host part (on a GPU the one shared window is 1/layers of the tier).
    if (window.offset < total || window.offset % HostTailAlignment() != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cpu backend: a window at byte %d overlaps the %d bytes before it or is misaligned", window.offset, total));
    }
    total = window.offset + window.bytes;
  }
  const size_t charged = device_bytes;
  if (used_.load() + charged > budget_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cpu backend: cannot allocate %d bytes: %d of the %d-byte budget are in use", charged, used_.load(), budget_));
  }
  void* p = ::operator new(total, kAlignment, std::nothrow);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrFormat("cpu backend: out of memory for a %d-byte host tail", host_bytes));
  }
  used_ += charged;
  {
    std::lock_guard<std::mutex> lock(tails_mu_);
    host_tail_bytes_[p] = total - charged;  // what Free must not take off the budget
  }
  return DeviceBuffer(this, p, total);
}

void CpuBackend::Free(void* data, size_t bytes) {
  ::operator delete(data, kAlignment);
  std::lock_guard<std::mutex> lock(tails_mu_);
  if (auto it = host_tail_bytes_.find(data); it != host_tail_bytes_.end()) {
    bytes -= it->second;
    host_tail_bytes_.erase(it);
  }
  used_ -= bytes;
}

size_t CpuBackend::FreeMemoryBytes() const { return budget_ - used_.load(); }

absl::StatusOr<HostBuffer> CpuBackend::AllocateHost(size_t bytes) {
  std::byte* p = new (std::nothrow) std::byte[bytes];
  if (p == nullptr) return absl::ResourceExhaustedError(absl::StrFormat("cannot allocate %d bytes of host memory", bytes));
  return HostBuffer(p, [](std::byte* q) { delete[] q; });
}

absl::Status CpuBackend::CopyToDevice(const void* host, void* device, size_t bytes) {
  if (bytes) std::memcpy(device, host, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(const void* device, void* host, size_t bytes) {
  if (bytes) std::memcpy(host, device, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::UploadFloat(std::span<const float> host, TensorView dst) {
  KVS_RETURN_IF_ERROR(RequireF32(dst, "UploadFloat", "destination"));
  KVS_RETURN_IF_ERROR(
      RequireShape(dst.IsContiguous() && static_cast<size_t>(dst.NumElements()) == host.size(), "UploadFloat",
                   [&] { return std::string("destination must be contiguous and match the host size"); }));
  std::memcpy(dst.data, host.data(), host.size_bytes());
  return absl::OkStatus();
}

absl::Status CpuBackend::DownloadFloat(TensorView src, std::span<float> host) {
  KVS_RETURN_IF_ERROR(RequireF32(src, "DownloadFloat", "source"));
  KVS_RETURN_IF_ERROR(
      RequireShape(static_cast<size_t>(src.NumElements()) == host.size(), "DownloadFloat", [&] { return Shape(src); }));
  for (int64_t r = 0; r < src.rows; ++r) {
    std::memcpy(host.data() + r * src.cols, src.Row<float>(r), src.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::FillRandom(TensorView dst, uint64_t seed, float mean, float half_range,
                                    RandomWindow window) {
  KVS_RETURN_IF_ERROR(RequireF32(dst, "FillRandom", "dst"));
  if (!dst.IsContiguous()) return absl::InvalidArgumentError("FillRandom: dst must be contiguous");
  float* p = static_cast<float*>(dst.data);
  const int64_t cols = dst.cols;
  const int64_t src_stride = window.row_stride == 0 ? cols : window.row_stride;
  ParallelFor(dst.rows, kParallelWork / std::max<int64_t>(cols, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const auto i = static_cast<uint64_t>(window.first + r * src_stride + c);
        p[r * cols + c] = mean + half_range * UniformSigned(seed, i);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Embedding(const int32_t* ids, TensorView table, int32_t first_id, TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(out, "Embedding", "out"));
  KVS_RETURN_IF_ERROR(RequireShape(table.cols == out.cols && table.IsContiguous(), "Embedding",
                                   [&] { return Shape(table) + " vs " + Shape(out); }));
  if (table.dtype == DType::kBlocks && LinearTakesBlocks(table.blocks)) {
    // A table kept in blocks (tied to the LM head): each row decoded as the reference decodes it.
    const int64_t row_bytes = table.BytesOf(table.stride);
    for (int64_t t = 0; t < out.rows; ++t) {
      const int64_t row = static_cast<int64_t>(ids[t]) - first_id;
      float* dst = out.Row<float>(t);
      if (row < 0 || row >= table.rows) {
        std::fill(dst, dst + out.cols, 0.0f);  // another rank holds this id's row
        continue;
      }
      DequantizeToF32(table.blocks,
                      std::span<const uint8_t>(static_cast<const uint8_t*>(table.data) + row * row_bytes,
                                               table.BytesOf(table.cols)),
                      std::span<float>(dst, out.cols));
    }
    return absl::OkStatus();
  }
  KVS_RETURN_IF_ERROR(RequireF32(table, "Embedding", "table"));
  cpu::EmbeddingF32(ids, out.rows, static_cast<const float*>(table.data), first_id, table.rows, table.cols,
                    static_cast<float*>(out.data), out.stride);
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(TensorView x, TensorView weight, float eps, TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(x, "RmsNorm", "x"));
  KVS_RETURN_IF_ERROR(RequireF32(weight, "RmsNorm", "weight"));
  KVS_RETURN_IF_ERROR(RequireF32(out, "RmsNorm", "out"));
  KVS_RETURN_IF_ERROR(RequireShape(x.rows == out.rows && x.cols == out.cols && weight.cols == x.cols, "RmsNorm",
                                   [&] { return Shape(x) + " " + Shape(weight) + " " + Shape(out); }));
  cpu::RmsNormF32(static_cast<const float*>(x.data), x.stride, static_cast<const float*>(weight.data),
                  x.rows, x.cols, eps, static_cast<float*>(out.data), out.stride);
  return absl::OkStatus();
}

absl::Status CpuBackend::HeadRmsNorm(TensorView x, int32_t heads, TensorView weight, float eps) {
  KVS_RETURN_IF_ERROR(RequireF32(x, "HeadRmsNorm", "x"));
  KVS_RETURN_IF_ERROR(RequireF32(weight, "HeadRmsNorm", "weight"));
  KVS_RETURN_IF_ERROR(
      RequireShape(heads > 0 && x.cols == static_cast<int64_t>(heads) * weight.NumElements(), "HeadRmsNorm",
                   [&] { return absl::StrFormat("x %s, %d heads, weight %s", Shape(x), heads, Shape(weight)); }));
  const int64_t dim = weight.NumElements();
  // Each token's heads are `heads` rows of `dim` with stride `dim`.
  for (int64_t t = 0; t < x.rows; ++t) {
    float* row = x.Row<float>(t);
    cpu::RmsNormF32(row, dim, static_cast<const float*>(weight.data), heads, dim, eps, row, dim);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Scale(TensorView x, float s) {
  KVS_RETURN_IF_ERROR(RequireF32(x, "Scale", "x"));
  for (int64_t r = 0; r < x.rows; ++r) {
    float* row = x.Row<float>(r);
    for (int64_t c = 0; c < x.cols; ++c) row[c] *= s;
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::AddRmsNorm(TensorView residual, TensorView x, TensorView weight, float eps,
                                    TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(residual, "AddRmsNorm", "residual"));
  KVS_RETURN_IF_ERROR(RequireF32(x, "AddRmsNorm", "x"));
  KVS_RETURN_IF_ERROR(RequireShape(residual.rows == x.rows && residual.cols == x.cols, "AddRmsNorm",
                                   [&] { return Shape(residual) + " vs " + Shape(x); }));
  for (int64_t r = 0; r < x.rows; ++r) {
    float* res = residual.Row<float>(r);
    const float* xr = x.Row<float>(r);
    for (int64_t c = 0; c < x.cols; ++c) res[c] += xr[c];
  }
  return RmsNorm(residual, weight, eps, out);
}

absl::Status CpuBackend::Linear(TensorView x, TensorView w, TensorView bias, TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(x, "Linear", "x"));
  if (w.dtype != DType::kBlocks || !LinearTakesBlocks(w.blocks)) KVS_RETURN_IF_ERROR(RequireF32(w, "Linear", "w"));
  KVS_RETURN_IF_ERROR(RequireF32(out, "Linear", "out"));
  KVS_RETURN_IF_ERROR(RequireShape(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows && w.IsContiguous(),
                                   "Linear",
                                   [&] { return "x " + Shape(x) + " w " + Shape(w) + " out " + Shape(out); }));
  if (bias.data != nullptr) {
    KVS_RETURN_IF_ERROR(RequireF32(bias, "Linear", "bias"));
    KVS_RETURN_IF_ERROR(RequireShape(bias.NumElements() == w.rows, "Linear", [&] { return "bias " + Shape(bias); }));
  }
  if (w.dtype == DType::kBlocks) {
    cpu::MatMulBlocks(w.blocks, static_cast<const float*>(x.data), x.stride, static_cast<const uint8_t*>(w.data),
                      w.BytesOf(w.stride), static_cast<const float*>(bias.data), x.rows, x.cols, w.rows,
                      static_cast<float*>(out.data), out.stride);
    return absl::OkStatus();
  }
  cpu::MatMulTransposedF32(static_cast<const float*>(x.data), x.stride,
                           static_cast<const float*>(w.data),
                           static_cast<const float*>(bias.data), x.rows, x.cols, w.rows,
                           static_cast<float*>(out.data), out.stride);
  return absl::OkStatus();
}

absl::Status CpuBackend::Rope(TensorView x, int32_t heads, const int32_t* positions, RopeTable rope) {
  KVS_RETURN_IF_ERROR(RequireF32(x, "Rope", "x"));
  KVS_RETURN_IF_ERROR(
      RequireShape(rope.head_dim > 0 && rope.head_dim % 2 == 0 && x.cols == static_cast<int64_t>(heads) * rope.head_dim,
                   "Rope", [&] { return absl::StrFormat("x %s, %d heads of %d", Shape(x), heads, rope.head_dim); }));
  cpu::RopeF32(static_cast<float*>(x.data), x.stride, x.rows, heads, rope.head_dim, positions,
               rope.inv_freq);
  return absl::OkStatus();
}

absl::Status CpuBackend::WriteKv(TensorView k, TensorView v, const int32_t* slot_mapping,
                                 PagedKvView cache) {
  KVS_RETURN_IF_ERROR(RequireF32(k, "WriteKv", "k"));
  KVS_RETURN_IF_ERROR(RequireF32(v, "WriteKv", "v"));
  KVS_RETURN_IF_ERROR(CheckCache(cache, "WriteKv"));
  KVS_RETURN_IF_ERROR(RequireShape(k.rows == v.rows && k.cols == cache.SlotStride() && v.cols == cache.SlotStride(),
                                   "WriteKv", [&] { return "k " + Shape(k) + " v " + Shape(v); }));
  cpu::WriteKvF32(static_cast<const float*>(k.data), k.stride, static_cast<const float*>(v.data),
                  v.stride, k.rows, slot_mapping, cache);
  return absl::OkStatus();
}

absl::Status CpuBackend::SealKvGroups(TensorView k, TensorView v, const AttentionBatch& batch, PagedKvView cache) {
  KVS_RETURN_IF_ERROR(RequireF32(k, "SealKvGroups", "k"));
  KVS_RETURN_IF_ERROR(RequireF32(v, "SealKvGroups", "v"));
  KVS_RETURN_IF_ERROR(CheckCache(cache, "SealKvGroups"));
  KVS_RETURN_IF_ERROR(RequireShape(
      KvChannelQuantized(cache.dtype) && k.rows == v.rows && k.rows == batch.num_tokens &&
          k.cols == cache.SlotStride() && v.cols == cache.SlotStride(),
      "SealKvGroups",
      [&] { return absl::StrFormat("k %s v %s, %s cache", Shape(k), Shape(v), KvDTypeName(cache.dtype)); }));
  cpu::SealKvGroupsF32(static_cast<const float*>(k.data), k.stride, static_cast<const float*>(v.data), v.stride, batch,
                       cache);
  return absl::OkStatus();
}

absl::Status CpuBackend::PagedAttention(TensorView q, PagedKvView cache, const AttentionBatch& batch,
                                        float scale, TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(q, "PagedAttention", "q"));
  KVS_RETURN_IF_ERROR(RequireF32(out, "PagedAttention", "out"));
  KVS_RETURN_IF_ERROR(CheckCache(cache, "PagedAttention"));
  const int64_t q_heads = q.cols / cache.head_dim;
  KVS_RETURN_IF_ERROR(RequireShape(q.cols % cache.head_dim == 0 && q_heads % cache.kv_heads == 0 &&
                                       out.rows == q.rows && out.cols == q.cols && batch.num_tokens == q.rows,
                                   "PagedAttention", [&] {
                                     return absl::StrFormat("q %s out %s, %d kv heads of %d, %d tokens", Shape(q),
                                                            Shape(out), cache.kv_heads, cache.head_dim,
                                                            batch.num_tokens);
                                   }));
  // The reference walks keys per query and head (the oracle); the fast backend tiles queries.
  const auto attention = math_ == CpuMath::kFast ? cpu::PagedAttentionTiledF32 : cpu::PagedAttentionF32;
  attention(static_cast<const float*>(q.data), q.stride, static_cast<int32_t>(q_heads), cache, batch, scale,
            static_cast<float*>(out.data), out.stride);
  return absl::OkStatus();
}

absl::Status CpuBackend::SwiGlu(TensorView gate_up, TensorView out) {
  return GatedActivation(gate_up, out, "SwiGlu", math_ == CpuMath::kFast ? cpu::SwiGluFastF32 : cpu::SwiGluF32);
}

absl::Status CpuBackend::GeluGlu(TensorView gate_up, TensorView out) {
  return GatedActivation(gate_up, out, "GeluGlu", math_ == CpuMath::kFast ? cpu::GeluGluFastF32 : cpu::GeluGluF32);
}

absl::Status CpuBackend::GatherRows(TensorView x, const int32_t* rows, TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(x, "GatherRows", "x"));
  KVS_RETURN_IF_ERROR(RequireF32(out, "GatherRows", "out"));
  KVS_RETURN_IF_ERROR(RequireShape(x.cols == out.cols, "GatherRows", [&] { return Shape(x) + " vs " + Shape(out); }));
  for (int64_t i = 0; i < out.rows; ++i) {
    KVS_CHECK_MSG(rows[i] >= 0 && rows[i] < x.rows, "GatherRows: row index out of range");
    std::memcpy(out.Row<float>(i), x.Row<float>(rows[i]), x.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::ArgmaxRows(TensorView logits, int32_t first_id, int32_t* ids, float* values) {
  KVS_RETURN_IF_ERROR(RequireF32(logits, "ArgmaxRows", "logits"));
  for (int64_t r = 0; r < logits.rows; ++r) {
    const float* row = logits.Row<float>(r);
    const float* best = std::max_element(row, row + logits.cols);
    ids[r] = first_id + static_cast<int32_t>(best - row);
    if (values != nullptr) values[r] = *best;
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyRegions(std::span<const CopyRegion> regions) {
  for (const CopyRegion& r : regions) std::memcpy(r.dst, r.src, r.bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Dequantize(GgmlType type, const void* src, int64_t src_stride, TensorView out) {
  KVS_RETURN_IF_ERROR(RequireF32(out, "Dequantize", "out"));
  const auto info = LookupGgmlType(static_cast<uint32_t>(type));
  if (!info) return absl::InvalidArgumentError("Dequantize: unknown GGML type");
  if (out.cols % info->block_elems != 0 || out.stride != out.cols) {
    return absl::InvalidArgumentError(absl::StrFormat("Dequantize: %d columns of %s in %d-element blocks, contiguous",
                                                      out.cols, info->name, info->block_elems));
  }
  const int64_t row_bytes = out.cols / info->block_elems * info->block_bytes;
  if (src_stride < row_bytes) return absl::InvalidArgumentError("Dequantize: rows overlap (stride < row bytes)");
  for (int64_t r = 0; r < out.rows; ++r) {
    const auto* row = static_cast<const uint8_t*>(src) + r * src_stride;
    DequantizeToF32(type, std::span<const uint8_t>(row, row_bytes), std::span<float>(out.Row<float>(r), out.cols));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::SampleRows(TensorView logits, const SampleRequest* requests, int32_t count, int32_t* ids) {
  KVS_RETURN_IF_ERROR(RequireF32(logits, "SampleRows", "logits"));
  if (count < 0) return absl::InvalidArgumentError("SampleRows: negative request count");
  for (int32_t i = 0; i < count; ++i) {
    const SampleRequest& r = requests[i];
    if (r.row < 0 || r.row >= logits.rows) {
      ids[i] = -1;
      continue;
    }
    const std::span<const float> row(logits.Row<float>(r.row), logits.cols);
    ids[i] = cpu::SampleToken(row, cpu::SampleOptions{r.temperature, r.top_k, r.top_p}, r.uniform, sample_scratch_);
  }
  return absl::OkStatus();
}

}  // namespace kvs
