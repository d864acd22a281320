// Reader for one .safetensors file: u64 little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the
// data. Offsets are relative to the end of the header. Every entry is checked: known dtype,
// size == product(shape) * element size, range inside the file, no overlap.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/model/mapped_file.h"

namespace kvs {

enum class SafetensorsDType { kF32, kF16, kBF16, kF8E4M3, kUnsupported };

struct SafetensorsTensor {
  std::string name;
  std::string dtype_name;  // as written in the file, e.g. "BF16"
  SafetensorsDType dtype = SafetensorsDType::kUnsupported;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  const std::string& path() const { return file_->path(); }
  const SafetensorsTensor* Find(const std::string& name) const;
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();
  std::unique_ptr<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// Decodes a F32/F16/BF16 tensor to float32; F8_E4M3 (OCP "fn": no infinities) to its code values,
// unscaled (the checkpoint's scales are applied by the weight source).
absl::Status SafetensorsToF32(const SafetensorsTensor& t, const std::string& path, std::span<float> out);

}  // namespace kvs
