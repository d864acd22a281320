#include "kernels/backend.h"

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

}  // namespace kvs
