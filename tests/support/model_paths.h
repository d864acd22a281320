// Where tests find the real models (SmolLM2 and Gemma 3 270M GGUFs, fetched by
// scripts/fetch_model.sh) and the goldens. Without the file a model test skips, unless
// KVS_REQUIRE_MODEL=1 (set by scripts/test.sh and so by CI), where a missing model is a failure.
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

inline std::string Gemma3Path() {
  if (const char* p = std::getenv("KVS_GEMMA3_GGUF")) return p;
  return std::string(KVS_SOURCE_DIR) + "/.cache/models/gemma-3-270m-q4_k_m.gguf";
}

// Returns `p` when it exists, or "" after recording a skip or a failure.
inline std::string RequireModel(const std::string& p, const char* what) {
  if (std::filesystem::exists(p)) return p;
  const char* req = std::getenv("KVS_REQUIRE_MODEL");
  if (req != nullptr && std::string(req) == "1") {
    ADD_FAILURE() << what << " missing at " << p << " (run scripts/fetch_model.sh smollm2 gemma3)";
  }
  return "";
}
inline std::string RequireSmolLm2() { return RequireModel(SmolLm2Path(), "SmolLM2 GGUF"); }
inline std::string RequireGemma3() { return RequireModel(Gemma3Path(), "Gemma 3 270M GGUF"); }

}  // namespace kvs::testing

#define KVS_REQUIRE_SMOLLM2(var)                                                        \
  const std::string var = ::kvs::testing::RequireSmolLm2();                             \
  if (var.empty()) GTEST_SKIP() << "SmolLM2 GGUF not fetched; run scripts/fetch_model.sh"

#define KVS_REQUIRE_GEMMA3(var)                                                         \
  const std::string var = ::kvs::testing::RequireGemma3();                              \
  if (var.empty()) GTEST_SKIP() << "Gemma 3 270M GGUF not fetched; run scripts/fetch_model.sh gemma3"
