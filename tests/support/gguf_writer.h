// Builds small GGUF files in memory for loader tests (valid ones, then corrupted copies).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace kvs::testing {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3) : version_(version) {}

  void Str(const std::string& key, const std::string& v) { Key(key, 8); PutStr(kv_, v); ++n_kv_; }
  void U32(const std::string& key, uint32_t v) { Key(key, 4); Put(kv_, v); ++n_kv_; }
  void F32(const std::string& key, float v) { Key(key, 6); Put(kv_, v); ++n_kv_; }
  void Bool(const std::string& key, bool v) { Key(key, 7); Put(kv_, static_cast<uint8_t>(v)); ++n_kv_; }
  void StrArray(const std::string& key, const std::vector<std::string>& v) {
    Key(key, 9); Put(kv_, uint32_t{8}); Put(kv_, static_cast<uint64_t>(v.size()));
    for (const auto& s : v) PutStr(kv_, s);
    ++n_kv_;
  }
  void I32Array(const std::string& key, const std::vector<int32_t>& v) {
    Key(key, 9); Put(kv_, uint32_t{5}); Put(kv_, static_cast<uint64_t>(v.size()));
    for (int32_t x : v) Put(kv_, x);
    ++n_kv_;
  }
  void F32Array(const std::string& key, const std::vector<float>& v) {
    Key(key, 9); Put(kv_, uint32_t{6}); Put(kv_, static_cast<uint64_t>(v.size()));
    for (float x : v) Put(kv_, x);
    ++n_kv_;
  }
  void BoolArray(const std::string& key, const std::vector<bool>& v) {
    Key(key, 9); Put(kv_, uint32_t{7}); Put(kv_, static_cast<uint64_t>(v.size()));
    for (bool x : v) Put(kv_, static_cast<uint8_t>(x));
    ++n_kv_;
  }
  // dims innermost first (GGUF order); `data` is the raw tensor bytes.
  void Tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, const std::vector<uint8_t>& data) {
    PutStr(ti_, name);
    Put(ti_, static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) Put(ti_, d);
    Put(ti_, type);
    while (data_.size() % 32) data_.push_back(0);
    Put(ti_, static_cast<uint64_t>(data_.size()));
    data_.insert(data_.end(), data.begin(), data.end());
    ++n_tensors_;
  }
  void TensorF32(const std::string& name, std::vector<uint64_t> dims, const std::vector<float>& v) {
    std::vector<uint8_t> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    Tensor(name, std::move(dims), 0, bytes);
  }

  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> out;
    Put(out, uint32_t{0x46554747});
    Put(out, version_);
    Put(out, n_tensors_);
    Put(out, n_kv_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    out.insert(out.end(), ti_.begin(), ti_.end());
    while (out.size() % 32) out.push_back(0);
    out.insert(out.end(), data_.begin(), data_.end());
    return out;
  }

 private:
  template <typename T>
  static void Put(std::vector<uint8_t>& b, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  static void PutStr(std::vector<uint8_t>& b, const std::string& s) {
    Put(b, static_cast<uint64_t>(s.size()));
    b.insert(b.end(), s.begin(), s.end());
  }
  void Key(const std::string& key, uint32_t type) { PutStr(kv_, key); Put(kv_, type); }

  uint32_t version_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
  std::vector<uint8_t> kv_, ti_, data_;
};

inline std::string WriteTemp(const std::string& name, const std::vector<uint8_t>& bytes) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return path;
}

}  // namespace kvs::testing
