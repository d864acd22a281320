// Where tests find the SmolLM2 GGUF (fetched by scripts/fetch_model.sh) and the goldens.
// Without the file a model test skips, unless KVS_REQUIRE_MODEL=1 (set by scripts/test.sh and
// so by CI), where a missing model is a failure.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace kvs::testing {

inline std::string GoldenPath(const std::string& rel) { return std::string(KVS_TEST_DATA) + "/" + rel; }

inline std::string SmolLm2Path() {
  if (const char* p = std::getenv("KVS_SMOLLM2_GGUF")) return p;
  return std::string(KVS_SOURCE_DIR) + "/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// Returns the path, or "" after recording a skip or a failure.
inline std::string RequireSmolLm2() {
  const std::string p = SmolLm2Path();
  if (std::filesystem::exists(p)) return p;
  const char* req = std::getenv("KVS_REQUIRE_MODEL");
  if (req != nullptr && std::string(req) == "1") {
    ADD_FAILURE() << "SmolLM2 GGUF missing at " << p << " (run scripts/fetch_model.sh)";
  }
  return "";
}

}  // namespace kvs::testing

#define KVS_REQUIRE_SMOLLM2(var)                                                        \
  const std::string var = ::kvs::testing::RequireSmolLm2();                             \
  if (var.empty()) GTEST_SKIP() << "SmolLM2 GGUF not fetched; run scripts/fetch_model.sh"
