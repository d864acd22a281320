// Element types a Backend stores, and their sizes. Shared by host and device code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvs {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kI32,
  // Rows of GGML blocks (TensorView::blocks names the type): weights kept as the file stores
  // them, for a backend whose Linear takes them (Backend::LinearTakesBlocks). No element size.
  kBlocks,
};

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kBlocks:
      return 0;
  }
  return 0;
}

constexpr std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
    case DType::kBlocks:
      return "blocks";
  }
  return "?";
}

}  // namespace kvs
