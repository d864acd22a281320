// Reader for GGUF files (versions 2 and 3), the llama.cpp weight format.
//
// Layout: "GGUF" magic, u32 version, u64 tensor count, u64 metadata count; metadata entries
// (string key, u32 type, value); tensor infos (string name, u32 n_dims, u64 dims[n_dims] with
// dims[0] innermost, u32 ggml type, u64 offset relative to the data section); then the data
// section, starting at the next multiple of `general.alignment` (default 32). Strings are u64
// length + bytes. Every read is bounds-checked: a truncated or corrupted file yields an error
// naming the file, the entry and the offset, never a crash.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/common/ggml_types.h"
#include "runtime/model/mapped_file.h"

namespace kvs {

// One metadata value. Integers of any width are widened; arrays of strings, integers and
// floats are kept as vectors (nested arrays are rejected).
struct GgufValue {
  using Variant = std::variant<uint64_t, int64_t, double, bool, std::string,
                               std::vector<std::string>, std::vector<int64_t>, std::vector<double>,
                               std::vector<bool>>;
  Variant value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // dims[0] is the innermost (contiguous) dimension
  uint32_t type = 0;          // raw GGML type id; may be one kvshard cannot decode
  uint64_t offset = 0;        // within the data section
  uint64_t num_bytes = 0;     // 0 when the type is not decodable
  int64_t NumElements() const;
};

class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  bool Has(const std::string& key) const { return metadata_.contains(key); }
  absl::StatusOr<uint64_t> GetUint(const std::string& key) const;
  absl::StatusOr<double> GetFloat(const std::string& key) const;
  absl::StatusOr<bool> GetBool(const std::string& key) const;
  absl::StatusOr<std::string> GetString(const std::string& key) const;
  absl::StatusOr<const std::vector<std::string>*> GetStringArray(const std::string& key) const;
  absl::StatusOr<const std::vector<int64_t>*> GetIntArray(const std::string& key) const;
  absl::StatusOr<const std::vector<double>*> GetFloatArray(const std::string& key) const;
  absl::StatusOr<const std::vector<bool>*> GetBoolArray(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(const std::string& name) const;
  // Raw bytes of a tensor whose type kvshard decodes (error otherwise).
  absl::StatusOr<std::span<const uint8_t>> TensorBytes(const GgufTensorInfo& info) const;

 private:
  GgufFile() = default;
  absl::Status Parse();
  absl::StatusOr<const GgufValue*> Find(const std::string& key) const;

  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_start_ = 0;
  absl::flat_hash_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace kvs
