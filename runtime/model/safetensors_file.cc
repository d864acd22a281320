#include "runtime/model/safetensors_file.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/kv_quant.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvs {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  const char* name;
  SafetensorsDType dtype;
  int size;
};
constexpr DTypeEntry kDTypes[] = {
    {"F32", SafetensorsDType::kF32, 4},   {"F16", SafetensorsDType::kF16, 2},
    {"BF16", SafetensorsDType::kBF16, 2}, {"F64", SafetensorsDType::kUnsupported, 8},
    {"I64", SafetensorsDType::kUnsupported, 8}, {"I32", SafetensorsDType::kUnsupported, 4},
    {"I16", SafetensorsDType::kUnsupported, 2}, {"I8", SafetensorsDType::kUnsupported, 1},
    {"U8", SafetensorsDType::kUnsupported, 1}, {"BOOL", SafetensorsDType::kUnsupported, 1},
    {"F8_E4M3", SafetensorsDType::kF8E4M3, 1}, {"F8_E5M2", SafetensorsDType::kUnsupported, 1},
};

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  KVS_ASSIGN_OR_RETURN(f->file_, MappedFile::Open(path));
  KVS_RETURN_IF_ERROR(f->Parse());
  return f;
}

absl::Status SafetensorsFile::Parse() {
  const std::string& p = file_->path();
  auto bytes = file_->bytes();
  if (bytes.size() < 8) return absl::DataLossError(p + ": truncated safetensors file (no header length)");
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: truncated or corrupted safetensors file: header of %d bytes but the file has %d", p,
        header_len, bytes.size()));
  }
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::DataLossError(p + ": safetensors header is not a JSON object");
  }
  const auto data = bytes.subspan(8 + header_len);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string what = absl::StrFormat("%s: tensor '%s'", p, name);
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() || !entry["shape"].is_array() ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return absl::DataLossError(what + ": malformed header entry (needs dtype, shape, data_offsets)");
    }
    SafetensorsTensor t;
    t.name = name;
    t.dtype_name = entry["dtype"].get<std::string>();
    const DTypeEntry* dt = nullptr;
    for (const auto& d : kDTypes) {
      if (t.dtype_name == d.name) dt = &d;
    }
    if (dt == nullptr) return absl::DataLossError(absl::StrFormat("%s: unknown dtype '%s'", what, t.dtype_name));
    t.dtype = dt->dtype;
    uint64_t elems = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) return absl::DataLossError(what + ": shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && elems > (1ull << 50) / v) return absl::DataLossError(what + ": shape too large");
      elems *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return absl::DataLossError(what + ": data_offsets must be non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>();
    const uint64_t end = off[1].get<uint64_t>();
    if (begin > end || end > data.size()) {
      return absl::DataLossError(absl::StrFormat(
          "%s: truncated: data [%d, %d) lies outside the %d data bytes of the file", what, begin, end, data.size()));
    }
    if (end - begin != elems * dt->size) {
      return absl::DataLossError(absl::StrFormat("%s: %d data bytes do not match shape x %s (%d bytes)",
                                                 what, end - begin, t.dtype_name, elems * dt->size));
    }
    t.bytes = data.subspan(begin, end - begin);
    ranges.emplace_back(begin, end);
    index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return absl::DataLossError(p + ": tensor data ranges overlap");
  }
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsToF32(const SafetensorsTensor& t, const std::string& path, std::span<float> out) {
  const uint8_t* p = t.bytes.data();
  switch (t.dtype) {
    case SafetensorsDType::kF32:
      if (t.bytes.size() != out.size() * 4) break;
      std::memcpy(out.data(), p, t.bytes.size());
      return absl::OkStatus();
    case SafetensorsDType::kF16:
    case SafetensorsDType::kBF16: {
      if (t.bytes.size() != out.size() * 2) break;
      const bool bf16 = t.dtype == SafetensorsDType::kBF16;
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t bits;
        std::memcpy(&bits, p + 2 * i, 2);
        out[i] = bf16 ? Bf16BitsToFloat(bits) : Fp16BitsToFloat(bits);
      }
      return absl::OkStatus();
    }
    case SafetensorsDType::kF8E4M3:
      if (t.bytes.size() != out.size()) break;
      for (size_t i = 0; i < out.size(); ++i) out[i] = Fp8E4M3ToFloat(p[i]);
      return absl::OkStatus();
    case SafetensorsDType::kUnsupported:
      return absl::UnimplementedError(absl::StrFormat(
          "%s: tensor '%s' has dtype %s; supported: F32, F16, BF16, F8_E4M3", path, t.name, t.dtype_name));
  }
  return absl::InternalError(absl::StrFormat("%s: tensor '%s': size mismatch on decode", path, t.name));
}

}  // namespace kvs
