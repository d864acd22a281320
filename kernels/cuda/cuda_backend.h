// The CUDA Backend: bf16 weights and activations with fp32 accumulation, an fp32 residual
// stream and fp32 logits; GEMMs through cuBLAS, everything else in kernels/cuda/*.cu. All work
// is ordered on one stream owned by the backend.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/f8_gemm.h"
#include "kernels/cuda/host_tail_memory.h"

namespace kvs {

class CudaBackend final : public Backend {
 public:
  // Binds `device` (the local rank's GPU) and creates the stream and cuBLAS handle.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device);
  ~CudaBackend() override;

  std::string Name() const override;
  DType ComputeDType() const override { return DType::kBF16; }
  // What the attention kernels are compiled for (cuda::AttentionHeadDims).
  std::string KvDTypeProblem(KvDType t, int32_t head_dim) const override;
  std::string AttentionWindowProblem(KvDType t, int32_t head_dim) const override;

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  size_t FreeMemoryBytes() const override;
  absl::StatusOr<HostBuffer> AllocateHost(size_t bytes) override;
  // CUDA virtual memory: device pages followed by host pages in one range (host_tail_memory.h).
  absl::StatusOr<DeviceBuffer> AllocateWithHostTail(size_t device_bytes, size_t host_bytes,
                                                    HostTailWindow window = {}) override;
  size_t HostTailAlignment() const override;
  absl::Status CopyToHostAsync(const void* device, void* host, size_t bytes) override;
  absl::Status CopyRegions(std::span<const CopyRegion> regions) override;
  // On a second stream of the lowest priority (the ops' stream has the highest), marks are events.
  absl::Status MoveRegions(std::span<const CopyRegion> regions, std::span<const MoveBatch> batches,
                           bool beside_ops = true) override;
  absl::Status WaitMoves(int32_t slot) override;
  absl::Status CopyOnDevice(const void* src, void* dst, size_t bytes) override;

  absl::Status CopyToDevice(const void* host, void* device, size_t bytes) override;
  absl::Status CopyToHost(const void* device, void* host, size_t bytes) override;
  absl::Status UploadFloat(std::span<const float> host, TensorView dst) override;
  absl::Status DownloadFloat(TensorView src, std::span<float> host) override;
  absl::Status Synchronize() override;
  absl::Status Dequantize(GgmlType type, const void* src, int64_t src_stride, TensorView out) override;
  // Every GGML type kvshard knows (cuda::DequantizeSupports).
  bool DequantizesType(GgmlType type) const override { return cuda::DequantizeSupports(type); }
  // Every GGML block type: Linear reads them in the decode GEMV (block_linear.cu) and through bf16
  // tiles for larger batches; Embedding decodes the rows it gathers.
  bool LinearTakesBlocks(GgmlType type) const override;
  absl::Status FillRandom(TensorView dst, uint64_t seed, float mean, float half_range, RandomWindow window = {}) override;
  absl::Status ReserveWorkspace(int64_t max_tokens, int32_t max_seqs, int32_t q_heads, int32_t head_dim) override;
  absl::Status ArrangeBlocks(GgmlType type, void* data, int64_t rows, int64_t cols) override;
  absl::Status ReservePrefillKvScratch(KvDType dtype, int32_t block_size, int32_t kv_heads, int32_t head_dim,
                                       int64_t max_context) override;

  absl::Status Embedding(const int32_t* ids, TensorView table, int32_t first_id, TensorView out) override;
  absl::Status HeadRmsNorm(TensorView x, int32_t heads, TensorView weight, float eps) override;
  absl::Status Scale(TensorView x, float s) override;
  absl::Status RmsNorm(TensorView x, TensorView weight, float eps, TensorView out) override;
  absl::Status AddRmsNorm(TensorView residual, TensorView x, TensorView weight, float eps, TensorView out) override;
  absl::Status Linear(TensorView x, TensorView w, TensorView bias, TensorView out) override;
  absl::Status Rope(TensorView x, int32_t heads, const int32_t* positions, RopeTable rope) override;
  absl::Status WriteKv(TensorView k, TensorView v, const int32_t* slot_mapping, PagedKvView cache) override;
  // One kernel for bf16 and fp16 caches (LaunchRopeWriteKv) where k is qk's last heads; else the two.
  absl::Status RopeWriteKv(TensorView qk, int32_t heads, const int32_t* positions, RopeTable rope, TensorView k,
                           TensorView v, const int32_t* slot_mapping, PagedKvView cache) override;
  absl::Status SealKvGroups(TensorView k, TensorView v, const AttentionBatch& batch, PagedKvView cache) override;
  absl::Status PagedAttention(TensorView q, PagedKvView cache, const AttentionBatch& batch, float scale,
                              TensorView out) override;
  absl::Status SwiGlu(TensorView gate_up, TensorView out) override;
  absl::Status GeluGlu(TensorView gate_up, TensorView out) override;
  absl::StatusOr<bool> GatedLinear(TensorView x, TensorView w, bool gelu, TensorView out) override;
  absl::Status GatherRows(TensorView x, const int32_t* rows, TensorView out) override;
  // CUDA graph capture of the stream (thread-local mode), instantiated for replay on it.
  absl::StatusOr<std::unique_ptr<RecordedOps>> Record(const std::function<absl::Status()>& ops) override;
  absl::Status ArgmaxRows(TensorView logits, int32_t first_id, int32_t* ids, float* values) override;
  absl::Status SampleRows(TensorView logits, const SampleRequest* requests, int32_t count, int32_t* ids) override;

  cudaStream_t stream() const { return stream_; }
  void* NativeStream() const override { return stream_; }

 protected:
  void Free(void* data, size_t bytes) override;

 private:
  CudaBackend() = default;
  // out = x w^T through cuBLAS (bf16 in, fp32 accumulate).
  absl::Status Gemm(TensorView x, TensorView w, TensorView out);
  // Linear with w in GGML blocks: the block GEMV up to kBlockGemvMaxTokens tokens; beyond (as
  // BlockGemmPath says), F8_E4M3 on FP8 tensor cores where cuBLASLt takes the shape
  // (LinearF8TensorCores), the block GEMM if chosen, else rows of w decoded into bf16 tiles of
  // block_tile_ and multiplied by cuBLAS, a tile at a time (LinearBf16Tiles).
  absl::Status LinearBlocks(TensorView x, TensorView w, TensorView out);
  absl::Status LinearBf16Tiles(TensorView x, TensorView w, TensorView out);
  // F8_E4M3 weights with more than kBlockGemvMaxTokens tokens: activations quantized per token
  // and 128 columns in chunks of f8_activations_, weight rows split into codes and scales in tiles
  // of block_tile_, cuBLASLt's block-scaled FP8 GEMM (f8_gemm.h); tokens past the last multiple of
  // 4 through the GEMV. False (nothing written) where it does not apply: then the bf16 tiles.
  absl::StatusOr<bool> LinearF8TensorCores(TensorView x, TensorView w, TensorView out);
  // The GEMV's and the block GEMM's int8 activations and the bf16 tile, allocated once
  // (ReserveWorkspace, or the first uncaptured Linear that needs them), so that captured steps never
  // allocate.
  absl::Status EnsureBlockBuffers();
  // Widest x the GEMV's activation buffer takes (wider ones go through the tiles), and the tile's
  // size: 32 MiB of bf16 stays in the H200's 50 MB L2 between its decode and its GEMM.
  static constexpr int64_t kGemvMaxK = 65536;
  static constexpr size_t kBlockTileBytes = size_t{32} << 20;
  // Set once a load keeps weights in blocks (LinearTakesBlocks said yes): ReserveWorkspace then
  // allocates the buffers above.
  mutable bool keeps_blocks_ = false;
  mutable bool keeps_f8_ = false;    // ... of F8_E4M3 (ReserveWorkspace then sets up the FP8 GEMM too)
  mutable bool keeps_ggml_ = false;  // ... of a GGML type (whose GEMV reads rounded activations)
  DeviceBuffer gemv_activations_;
  cuda::QuantizedActivations gemv_a_;
  DeviceBuffer block_tile_;
  // What gemv_a_ holds: the rounding of the activations at `data` (rows x cols, stride apart) in the
  // GEMV's order or in unit order, written by the Linear that needed it or by the kernel that wrote
  // those activations: while GGML blocks are kept, RmsNorm, AddRmsNorm, SwiGlu, GeluGlu and
  // PagedAttention (where its keys split: the merge) round their decode-sized outputs as they write
  // them, so a decode step's Linears launch no rounding kernel. A Linear whose input matches skips
  // its rounding (as do a matrix's later parts). Every other op that writes device memory forgets
  // it, since it may rewrite those activations, and so does a Linear whose output overlaps them. Ops of
  // the runner outside the backend that write a Linear's input (the peer all-reduce into `normed`)
  // always follow a producer or Linear of another tensor, which replaced what is held.
  struct HeldRounding {
    const void* data = nullptr;
    int64_t rows = 0, cols = 0, stride = 0;
    bool gemv_order = false;
  };
  std::optional<HeldRounding> held_rounding_;
  bool HoldsRounding(const TensorView& x, bool gemv_order) const;
  void NoteRounding(const TensorView& x, bool gemv_order) {
    held_rounding_ = HeldRounding{x.data, x.rows, x.cols, x.stride, gemv_order};
  }
  void ForgetRounding() { held_rounding_.reset(); }
  // Where a producer of `out` also rounds it: decode-sized outputs (the GEMV's tokens, in its
  // order) while GGML blocks are kept; null with no buffer yet, or rows wider than the buffer's,
  // which the GEMV does not take either.
  const cuda::QuantizedActivations* ProducerRounding(const TensorView& out) const {
    return keeps_ggml_ && gemv_a_.q != nullptr && out.rows <= cuda::kBlockGemvMaxTokens && out.cols <= kGemvMaxK
               ? &gemv_a_
               : nullptr;
  }
  // After a producer wrote `out`: held if it rounded it, else forgotten.
  void ProducerWrote(const TensorView& out, bool rounded) {
    if (rounded) {
      NoteRounding(out, /*gemv_order=*/true);
    } else {
      ForgetRounding();
    }
  }
  static constexpr size_t kF8ActivationBytes = size_t{32} << 20;  // E4M3 activations and their scales
  DeviceBuffer f8_activations_;
  std::optional<cuda::F8Gemm> f8_gemm_;
  // Queues `regions` on `stream`: one copy kernel reading its table at `device_table` when every
  // region is in aligned 16-byte words, else a cudaMemcpyAsync each.
  absl::Status IssueRegions(std::span<const CopyRegion> regions, const CopyRegion* device_table, cudaStream_t stream,
                            int max_blocks = 0);
  // Copy-kernel blocks for moves beside the ops: two SMs of warps fill the host link (50 GB/s
  // measured on the H200) and leave the other SMs to the forward pass (docs/performance.md).
  static constexpr int kMoveBlocksBesideOps = 2;
  // Whether IssueRegions would use the copy kernel (and so needs the table on the device).
  static bool UsesCopyKernel(std::span<const CopyRegion> regions);
  // The event behind move slot `slot`, made on first use.
  absl::StatusOr<cudaEvent_t> MoveMark(int32_t slot);
  int device_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer workspace_;
  DeviceBuffer prefill_kv_scratch_;  // AttentionWorkspace::kv_scratch
  // Fixed, so that captured GEMMs never allocate; cuBLAS and cuBLASLt (the FP8 GEMM) share it, in
  // stream order. 32 MiB: cuBLAS's recommendation for Hopper.
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
  DeviceBuffer cublas_workspace_;
  DeviceBuffer copy_table_;        // CopyRegions' table on the device
  // KV block moves: their stream, its table, the ops' point it starts from, and the slot marks.
  cudaStream_t move_stream_ = nullptr;
  DeviceBuffer move_table_;
  cudaEvent_t ops_issued_ = nullptr;
  std::vector<cudaEvent_t> move_marks_;
  cuda::AttentionWorkspace attention_ws_;
  absl::flat_hash_map<void*, cuda::HostTailRange> host_tails_;  // AllocateWithHostTail buffers
  // Device windows shared by host-tail ranges (HostTailWindow), by id, with the ranges mapping them.
  struct SharedWindow {
    unsigned long long handle;
    size_t bytes;
    int32_t users;
  };
  absl::flat_hash_map<int32_t, SharedWindow> windows_;
  void ReleaseWindowUse(int32_t id, bool mapped);  // frees the window when no range maps it
};

// Number of visible CUDA devices (0 without a GPU or driver).
int CudaDeviceCount();

}  // namespace kvs
