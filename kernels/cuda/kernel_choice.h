// A process-wide choice between a default kernel and one kept beside it for comparison (tests and
// benchmarks run both): set by its setter, else read once from an environment variable.
#pragma once

#include <atomic>
#include <cstdlib>
#include <string_view>

namespace kvs::cuda {

class KernelChoice {
 public:
  // `env`=`alternative` in the environment picks the alternative until Set says otherwise.
  constexpr KernelChoice(const char* env, const char* alternative) : env_(env), alternative_(alternative) {}
  void Set(bool alternative) { value_.store(alternative ? 1 : 0); }
  void Reset() { value_.store(-1); }  // back to the environment's choice (or the default)
  bool Alternative() {
    int v = value_.load();
    if (v < 0) {
      const char* e = std::getenv(env_);
      v = e != nullptr && std::string_view(e) == alternative_ ? 1 : 0;
      value_.store(v);
    }
    return v == 1;
  }

 private:
  const char* env_;
  const char* alternative_;
  std::atomic<int> value_{-1};  // -1: not yet read from the environment
};

}  // namespace kvs::cuda
