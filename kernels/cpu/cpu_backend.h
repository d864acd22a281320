// The CPU Backend: float32 everywhere, "device" memory is the host heap. It is the reference
// implementation (the oracle for the CUDA backend) and the default on machines without a GPU.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kernels/backend.h"

namespace kvs {

// How the CPU backend computes Linear: the float32 reference (every weight decoded to float32 at
// load; the oracle that the CUDA kernels and the fast path are tested against), or weights kept
// in their GGML blocks with int8 dot products (kernels/cpu/block_matmul.h), what `--device cpu`
// runs; `--device cpu-reference` selects the reference.
enum class CpuMath { kReference, kFast };

class CpuBackend final : public Backend {
 public:
  // `memory_budget_bytes` bounds what Allocate hands out, so KV pool sizing on the CPU behaves
  // like on a GPU with that much memory.
  explicit CpuBackend(size_t memory_budget_bytes, CpuMath math = CpuMath::kReference);
  CpuMath math() const { return math_; }

  std::string Name() const override { return "cpu"; }
  DType ComputeDType() const override { return DType::kF32; }
  // Every format, as the reference.
  std::string KvDTypeProblem(KvDType t, int32_t head_dim) const override {
    const char* problem = KvDTypeHeadDimProblem(t, head_dim);
    return problem == nullptr ? "" : problem;
  }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  size_t FreeMemoryBytes() const override;
  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override;
  // One heap block; only the device part counts against the budget.
  absl::StatusOr<DeviceBuffer> AllocateWithHostTail(size_t device_bytes, size_t host_bytes,
                                                    HostTailWindow window = {}) override;
  absl::Status CopyOnDevice(const void* src, void* dst, size_t bytes) override { return CopyToHost(src, dst, bytes); }
  absl::Status CopyToHostAsync(const void* device, void* host, size_t bytes) override {
    return CopyToHost(device, host, bytes);
  }
  absl::Status CopyRegions(std::span<const CopyRegion> regions) override;

  absl::Status CopyToDevice(const void* host, void* device, size_t bytes) override;
  absl::Status CopyToHost(const void* device, void* host, size_t bytes) override;
  absl::Status UploadFloat(std::span<const float> host, TensorView dst) override;
  absl::Status DownloadFloat(TensorView src, std::span<float> host) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::Status Dequantize(GgmlType type, const void* src, int64_t src_stride, TensorView out) override;
  bool DequantizesType(GgmlType type) const override { return LookupGgmlType(static_cast<uint32_t>(type)).has_value(); }
  bool LinearTakesBlocks(GgmlType type) const override;
  absl::Status FillRandom(TensorView dst, uint64_t seed, float mean, float half_range, RandomWindow window = {}) override;

  absl::Status Embedding(const int32_t* ids, TensorView table, int32_t first_id, TensorView out) override;
  absl::Status HeadRmsNorm(TensorView x, int32_t heads, TensorView weight, float eps) override;
  absl::Status Scale(TensorView x, float s) override;
  absl::Status RmsNorm(TensorView x, TensorView weight, float eps, TensorView out) override;
  absl::Status AddRmsNorm(TensorView residual, TensorView x, TensorView weight, float eps,
                          TensorView out) override;
  absl::Status Linear(TensorView x, TensorView w, TensorView bias, TensorView out) override;
  absl::Status Rope(TensorView x, int32_t heads, const int32_t* positions, RopeTable rope) override;
  absl::Status WriteKv(TensorView k, TensorView v, const int32_t* slot_mapping,
                       PagedKvView cache) override;
  absl::Status SealKvGroups(TensorView k, TensorView v, const AttentionBatch& batch, PagedKvView cache) override;
  absl::Status PagedAttention(TensorView q, PagedKvView cache, const AttentionBatch& batch,
                              float scale, TensorView out) override;
  absl::Status SwiGlu(TensorView gate_up, TensorView out) override;
  absl::Status GeluGlu(TensorView gate_up, TensorView out) override;
  absl::Status GatherRows(TensorView x, const int32_t* rows, TensorView out) override;
  absl::Status ArgmaxRows(TensorView logits, int32_t first_id, int32_t* ids, float* values) override;
  absl::Status SampleRows(TensorView logits, const SampleRequest* requests, int32_t count, int32_t* ids) override;

 protected:
  void Free(void* data, size_t bytes) override;

 private:
  size_t budget_;
  CpuMath math_;
  std::atomic<size_t> used_{0};
  std::mutex tails_mu_;
  absl::flat_hash_map<void*, size_t> host_tail_bytes_;  // AllocateWithHostTail buffers
  std::vector<std::pair<float, int32_t>> sample_scratch_;  // SampleRows' ranking
};

}  // namespace kvs
