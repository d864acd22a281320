#include "kernels/backend.h"

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    owner_ = std::exchange(o.owner_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::Reset() {
  if (owner_ != nullptr && data_ != nullptr) owner_->Free(data_, bytes_);
  owner_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

TensorView DeviceBuffer::View(DType dtype, int64_t rows, int64_t cols) const {
  KVS_CHECK_MSG(static_cast<size_t>(rows * cols) * DTypeSize(dtype) <= bytes_,
                "view larger than its buffer");
  return TensorView::Contiguous(data_, dtype, rows, cols);
}

absl::Status BackendQueue::CheckMoveBatches(std::span<const CopyRegion> regions, std::span<const MoveBatch> batches) {
  int64_t total = 0;
  for (const MoveBatch& b : batches) {
    if (b.count < 0) return absl::InvalidArgumentError("MoveRegions: a batch of negative size");
    total += b.count;
  }
  if (total != static_cast<int64_t>(regions.size())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MoveRegions: batches hold %d regions, %d given", total, regions.size()));
  }
  return absl::OkStatus();
}

absl::Status BackendQueue::MoveRegions(std::span<const CopyRegion> regions, std::span<const MoveBatch> batches,
                                       bool beside_ops) {
  KVS_RETURN_IF_ERROR(CheckMoveBatches(regions, batches));
  for (const MoveBatch& b : batches) {
    KVS_RETURN_IF_ERROR(CopyRegions(regions.first(b.count)));
    regions = regions.subspan(b.count);
  }
  return absl::OkStatus();
}

}  // namespace kvs
