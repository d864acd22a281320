#include "runtime/model/gguf_file.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

enum GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxDims = 4;
// Sanity bounds that stop a corrupted count from driving a huge allocation.
constexpr uint64_t kMaxStringBytes = 1ull << 30;

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, const std::string& path) : bytes_(bytes), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  absl::Status Truncated(const std::string& what, uint64_t need) const {
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated or corrupted GGUF: reading %s needs %d bytes at offset %d, but the file "
        "has %d",
        path_, what, need, pos_, bytes_.size()));
  }

  template <typename T>
  absl::StatusOr<T> Read(const std::string& what) {
    if (remaining() < sizeof(T)) return Truncated(what, sizeof(T));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> ReadString(const std::string& what) {
    KVS_ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what + " (length)"));
    if (len > kMaxStringBytes || len > remaining()) return Truncated(what, len);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& path_;
  uint64_t pos_ = 0;
};

uint64_t ScalarSize(uint32_t type) {
  switch (type) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    default: return 0;
  }
}

// Reads one scalar of `type` into the widest matching C++ type.
absl::StatusOr<GgufValue::Variant> ReadScalar(Cursor& c, uint32_t type, const std::string& what) {
  switch (type) {
    case kU8: { KVS_ASSIGN_OR_RETURN(uint8_t v, c.Read<uint8_t>(what)); return uint64_t{v}; }
    case kU16: { KVS_ASSIGN_OR_RETURN(uint16_t v, c.Read<uint16_t>(what)); return uint64_t{v}; }
    case kU32: { KVS_ASSIGN_OR_RETURN(uint32_t v, c.Read<uint32_t>(what)); return uint64_t{v}; }
    case kU64: { KVS_ASSIGN_OR_RETURN(uint64_t v, c.Read<uint64_t>(what)); return v; }
    case kI8: { KVS_ASSIGN_OR_RETURN(int8_t v, c.Read<int8_t>(what)); return int64_t{v}; }
    case kI16: { KVS_ASSIGN_OR_RETURN(int16_t v, c.Read<int16_t>(what)); return int64_t{v}; }
    case kI32: { KVS_ASSIGN_OR_RETURN(int32_t v, c.Read<int32_t>(what)); return int64_t{v}; }
    case kI64: { KVS_ASSIGN_OR_RETURN(int64_t v, c.Read<int64_t>(what)); return v; }
    case kF32: { KVS_ASSIGN_OR_RETURN(float v, c.Read<float>(what)); return double{v}; }
    case kF64: { KVS_ASSIGN_OR_RETURN(double v, c.Read<double>(what)); return v; }
    case kBool: {
      KVS_ASSIGN_OR_RETURN(uint8_t v, c.Read<uint8_t>(what));
      if (v > 1) return absl::DataLossError(absl::StrFormat("%s: bool value %d is not 0 or 1", what, v));
      return v == 1;
    }
    case kString: { KVS_ASSIGN_OR_RETURN(std::string s, c.ReadString(what)); return s; }
    default:
      return absl::DataLossError(absl::StrFormat("%s: unknown GGUF value type %d", what, type));
  }
}

absl::StatusOr<GgufValue> ReadValue(Cursor& c, uint32_t type, const std::string& what) {
  if (type != kArray) {
    KVS_ASSIGN_OR_RETURN(GgufValue::Variant v, ReadScalar(c, type, what));
    return GgufValue{std::move(v)};
  }
  KVS_ASSIGN_OR_RETURN(uint32_t elem_type, c.Read<uint32_t>(what + " (array type)"));
  KVS_ASSIGN_OR_RETURN(uint64_t count, c.Read<uint64_t>(what + " (array length)"));
  if (elem_type == kArray) {
    return absl::UnimplementedError(absl::StrFormat("%s: nested GGUF arrays are not supported", what));
  }
  // Each element takes at least one byte (strings at least 8), so a count larger than what is
  // left is corruption; reject it before reserving memory.
  const uint64_t min_elem = elem_type == kString ? 8 : ScalarSize(elem_type);
  if (min_elem == 0) {
    return absl::DataLossError(absl::StrFormat("%s: unknown GGUF array element type %d", what, elem_type));
  }
  if (count > c.remaining() / min_elem) return c.Truncated(what, count * min_elem);
  GgufValue out;
  if (elem_type == kString) {
    std::vector<std::string> v;
    v.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      KVS_ASSIGN_OR_RETURN(std::string s, c.ReadString(absl::StrFormat("%s[%d]", what, i)));
      v.push_back(std::move(s));
    }
    out.value = std::move(v);
  } else if (elem_type == kF32 || elem_type == kF64) {
    std::vector<double> v(count);
    for (uint64_t i = 0; i < count; ++i) {
      KVS_ASSIGN_OR_RETURN(GgufValue::Variant s, ReadScalar(c, elem_type, what));
      v[i] = std::get<double>(s);
    }
    out.value = std::move(v);
  } else if (elem_type == kBool) {
    std::vector<bool> v(count);
    for (uint64_t i = 0; i < count; ++i) {
      KVS_ASSIGN_OR_RETURN(GgufValue::Variant s, ReadScalar(c, elem_type, what));
      v[i] = std::get<bool>(s);
    }
    out.value = std::move(v);
  } else {
    std::vector<int64_t> v(count);
    for (uint64_t i = 0; i < count; ++i) {
      KVS_ASSIGN_OR_RETURN(GgufValue::Variant s, ReadScalar(c, elem_type, what));
      if (auto* u = std::get_if<uint64_t>(&s)) {
        if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return absl::DataLossError(absl::StrFormat("%s[%d]: value too large", what, i));
        }
        v[i] = static_cast<int64_t>(*u);
      } else {
        v[i] = std::get<int64_t>(s);
      }
    }
    out.value = std::move(v);
  }
  return out;
}

}  // namespace

int64_t GgufTensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  KVS_ASSIGN_OR_RETURN(f->file_, MappedFile::Open(path));
  KVS_RETURN_IF_ERROR(f->Parse());
  return f;
}

absl::Status GgufFile::Parse() {
  const std::string& p = file_->path();
  Cursor c(file_->bytes(), p);
  KVS_ASSIGN_OR_RETURN(uint32_t magic, c.Read<uint32_t>("magic"));
  if (magic != kMagic) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a GGUF file (bad magic 0x%08x)", p, magic));
  }
  KVS_ASSIGN_OR_RETURN(version_, c.Read<uint32_t>("version"));
  if (version_ != 2 && version_ != 3) {
    return absl::UnimplementedError(
        absl::StrFormat("%s: GGUF version %d is not supported (only 2 and 3)", p, version_));
  }
  KVS_ASSIGN_OR_RETURN(uint64_t tensor_count, c.Read<uint64_t>("tensor count"));
  KVS_ASSIGN_OR_RETURN(uint64_t kv_count, c.Read<uint64_t>("metadata count"));
  // A tensor info takes at least 28 bytes and a metadata entry at least 13.
  if (tensor_count > c.remaining() / 28 || kv_count > c.remaining() / 13) {
    return c.Truncated(absl::StrFormat("%d tensors and %d metadata entries", tensor_count, kv_count), 0);
  }

  for (uint64_t i = 0; i < kv_count; ++i) {
    KVS_ASSIGN_OR_RETURN(std::string key, c.ReadString(absl::StrFormat("metadata key #%d", i)));
    KVS_ASSIGN_OR_RETURN(uint32_t type, c.Read<uint32_t>("type of metadata '" + key + "'"));
    auto value = ReadValue(c, type, "metadata '" + key + "'");
    if (!value.ok()) {
      return absl::Status(value.status().code(), p + ": " + std::string(value.status().message()));
    }
    if (!metadata_.emplace(key, *std::move(value)).second) {
      return absl::DataLossError(absl::StrFormat("%s: metadata key '%s' appears twice", p, key));
    }
  }
  if (Has("general.alignment")) {
    KVS_ASSIGN_OR_RETURN(alignment_, GetUint("general.alignment"));
    if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0 || alignment_ > 65536) {
      return absl::DataLossError(absl::StrFormat("%s: general.alignment %d is not a power of two", p, alignment_));
    }
  }

  tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    KVS_ASSIGN_OR_RETURN(t.name, c.ReadString(absl::StrFormat("name of tensor #%d", i)));
    const std::string what = "tensor '" + t.name + "'";
    KVS_ASSIGN_OR_RETURN(uint32_t n_dims, c.Read<uint32_t>(what + " rank"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return absl::DataLossError(absl::StrFormat("%s: %s has rank %d (must be 1..%d)", p, what, n_dims, kMaxDims));
    }
    int64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      KVS_ASSIGN_OR_RETURN(uint64_t dim, c.Read<uint64_t>(what + " dims"));
      if (dim == 0 || dim > (1ull << 40) || static_cast<uint64_t>(elems) > (1ull << 48) / dim) {
        return absl::DataLossError(absl::StrFormat("%s: %s has an invalid dimension %d", p, what, dim));
      }
      elems *= static_cast<int64_t>(dim);
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    KVS_ASSIGN_OR_RETURN(t.type, c.Read<uint32_t>(what + " type"));
    KVS_ASSIGN_OR_RETURN(t.offset, c.Read<uint64_t>(what + " offset"));
    if (t.offset % alignment_ != 0) {
      return absl::DataLossError(absl::StrFormat("%s: %s offset %d is not aligned to %d", p, what,
                                                 t.offset, alignment_));
    }
    if (auto info = LookupGgufType(t.type)) {
      if (t.dims[0] % info->block_elems != 0) {
        return absl::DataLossError(absl::StrFormat(
            "%s: %s has %d elements per row, not a multiple of the %s block size %d", p, what,
            t.dims[0], info->name, info->block_elems));
      }
      t.num_bytes = static_cast<uint64_t>(elems / info->block_elems) * info->block_bytes;
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return absl::DataLossError(absl::StrFormat("%s: tensor '%s' appears twice", p, t.name));
    }
    tensors_.push_back(std::move(t));
  }
  data_start_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  for (const GgufTensorInfo& t : tensors_) {
    if (t.num_bytes == 0) continue;
    if (data_start_ + t.offset + t.num_bytes > file_->size() || data_start_ + t.offset < data_start_) {
      return absl::DataLossError(absl::StrFormat(
          "%s: truncated: tensor '%s' needs bytes [%d, %d) but the file has %d", p, t.name,
          data_start_ + t.offset, data_start_ + t.offset + t.num_bytes, file_->size()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const GgufValue*> GgufFile::Find(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) {
    return absl::NotFoundError(absl::StrFormat("%s: metadata key '%s' is missing", path(), key));
  }
  return &it->second;
}

absl::StatusOr<uint64_t> GgufFile::GetUint(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* u = std::get_if<uint64_t>(&v->value)) return *u;
  if (auto* i = std::get_if<int64_t>(&v->value); i && *i >= 0) return static_cast<uint64_t>(*i);
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: metadata '%s' is not a non-negative integer", path(), key));
}

absl::StatusOr<double> GgufFile::GetFloat(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* d = std::get_if<double>(&v->value)) return *d;
  if (auto* u = std::get_if<uint64_t>(&v->value)) return static_cast<double>(*u);
  if (auto* i = std::get_if<int64_t>(&v->value)) return static_cast<double>(*i);
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not a number", path(), key));
}

absl::StatusOr<bool> GgufFile::GetBool(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* b = std::get_if<bool>(&v->value)) return *b;
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not a bool", path(), key));
}

absl::StatusOr<std::string> GgufFile::GetString(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* s = std::get_if<std::string>(&v->value)) return *s;
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not a string", path(), key));
}

absl::StatusOr<const std::vector<std::string>*> GgufFile::GetStringArray(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* s = std::get_if<std::vector<std::string>>(&v->value)) return s;
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not a string array", path(), key));
}

absl::StatusOr<const std::vector<int64_t>*> GgufFile::GetIntArray(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* s = std::get_if<std::vector<int64_t>>(&v->value)) return s;
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not an integer array", path(), key));
}

absl::StatusOr<const std::vector<double>*> GgufFile::GetFloatArray(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* s = std::get_if<std::vector<double>>(&v->value)) return s;
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not a float array", path(), key));
}

absl::StatusOr<const std::vector<bool>*> GgufFile::GetBoolArray(const std::string& key) const {
  KVS_ASSIGN_OR_RETURN(const GgufValue* v, Find(key));
  if (auto* s = std::get_if<std::vector<bool>>(&v->value)) return s;
  return absl::InvalidArgumentError(absl::StrFormat("%s: metadata '%s' is not a bool array", path(), key));
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::span<const uint8_t>> GgufFile::TensorBytes(const GgufTensorInfo& info) const {
  if (!LookupGgufType(info.type)) {
    std::vector<std::string> known;
    for (uint32_t id = 0; id < 64; ++id) {
      if (const auto t = LookupGgufType(id)) known.emplace_back(t->name);
    }
    return absl::UnimplementedError(
        absl::StrFormat("%s: tensor '%s' has GGML type %s (%d), which kvshard cannot decode (supported: %s)", path(),
                        info.name, GgmlTypeNameForError(info.type), info.type, absl::StrJoin(known, ", ")));
  }
  return file_->bytes().subspan(data_start_ + info.offset, info.num_bytes);
}

}  // namespace kvs
