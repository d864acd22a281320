// Synthetic models: a preset's shape with seeded random weights (no download). Matrices are
// uniform with the variance of 1/fan_in so activations stay O(1) through the layers; norms
// are 1 +- 0.1. ReadF32 yields the same values the backends' FillRandom writes.
//
// "random:<preset>:<GGML type>" keeps every matrix in that block type instead (random codes, scales
// of the matrix's magnitude), read through ReadRaw as a GGUF file's would be: the weights-in-blocks
// paths measured at a real model's shape without a converter. The blocks are made on first read
// and kept for the source's life (a Llama-3-8B at Q4_K holds 4.6 GB of host memory).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/kv_quant.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model/quantizing_weight_source.h"
#include "runtime/model/weight_source.h"

#ifndef KVS_DEFAULT_CONFIG_DIR
#define KVS_DEFAULT_CONFIG_DIR "configs"
#endif

namespace kvs {
namespace {

namespace fs = std::filesystem;

class RandomWeightSource final : public WeightSource {
 public:
  RandomWeightSource(std::string spec, ModelConfig c, uint64_t seed, std::optional<GgmlType> blocks)
      : spec_(std::move(spec)), config_(std::move(c)), seed_(seed), blocks_(blocks) {}

  const ModelConfig& config() const override { return config_; }
  std::string path() const override { return spec_; }
  std::string format() const override { return "random"; }
  bool Has(const std::string& name) const override {
    return !(name == "lm_head.weight" && config_.tie_word_embeddings) &&
           !(name.find("_proj.bias") != std::string::npos && !config_.attention_bias);
  }

  std::optional<RandomInit> RandomInitFor(const std::string& name) const override {
    if (InBlocks(name)) return std::nullopt;  // read through ReadRaw
    return InitFor(name);
  }

  absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string& name, std::span<const int64_t> shape) const override {
    if (!InBlocks(name) || shape.size() != 2) return std::nullopt;
    if (!Has(name)) return absl::NotFoundError(absl::StrFormat("%s: no tensor '%s'", spec_, name));
    const GgmlTypeInfo info = *LookupGgmlType(static_cast<uint32_t>(*blocks_));
    // Rows that are not whole blocks (SmolLM2's 576 columns at 256 per K-quant block) stay float, as
    // llama-quantize falls back to another type for them.
    if (shape[1] % info.block_elems != 0) return std::nullopt;
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint8_t>& bytes = made_[name];
    if (bytes.empty()) bytes = MakeBlocks(info, shape[0] * shape[1], InitFor(name));
    return RawTensor{*blocks_, bytes, {}, nullptr};  // made_ keeps the bytes
  }

  std::optional<GgmlType> StoredBlockType(const std::string& name) const override {
    if (!InBlocks(name) || !Has(name)) return std::nullopt;
    if (Columns(name) % LookupGgmlType(static_cast<uint32_t>(*blocks_))->block_elems != 0) return std::nullopt;
    return blocks_;
  }

  absl::Status ReadF32(const std::string& name, std::span<const int64_t> shape, std::span<float> out) const override {
    if (!Has(name)) return absl::NotFoundError(absl::StrFormat("%s: no tensor '%s'", spec_, name));
    const RandomInit init = InitFor(name);
    for (size_t i = 0; i < out.size(); ++i) out[i] = init.mean + init.half_range * UniformSigned(init.seed, i);
    return absl::OkStatus();
  }

  std::vector<TensorSummary> Summaries() const override {
    const std::string kind = blocks_ ? std::string(LookupGgmlType(static_cast<uint32_t>(*blocks_))->name) + " matrices, " : "";
    return {{"(random weights, " + kind + "seed " + std::to_string(seed_) + ")", "random", {config_.ParameterCount()}}};
  }

 private:
  static bool IsMatrix(const std::string& name) {
    return name.find("norm") == std::string::npos && name.find(".bias") == std::string::npos;
  }
  // Whether `name` is kept in the blocks of the spec's type: every matrix, but for F8_E4M3 not the
  // embedding and LM head, which FP8 checkpoints (vLLM's, transformers') keep in bf16.
  bool InBlocks(const std::string& name) const {
    if (!blocks_ || !IsMatrix(name)) return false;
    return *blocks_ != GgmlType::kF8_E4M3 || (name != "model.embed_tokens.weight" && name != "lm_head.weight");
  }

  // A matrix's columns (its fan-in): the hidden size, but the query width for o_proj and the
  // intermediate size for down_proj.
  int64_t Columns(const std::string& name) const { return ProjectionColumns(config_, name); }

  RandomInit InitFor(const std::string& name) const {
    const bool norm = name.find("norm") != std::string::npos;
    const bool bias = name.find(".bias") != std::string::npos;
    const float fan_in = static_cast<float>(Columns(name));
    RandomInit init;
    init.seed = NameSeed(name.c_str(), seed_);
    if (norm) {
      init.mean = 1.0f;
      init.half_range = 0.1f;
    } else if (bias) {
      init.half_range = 0.1f;
    } else if (name == "model.embed_tokens.weight") {
      init.half_range = 1.0f;
    } else {
      init.half_range = std::sqrt(3.0f / fan_in);  // uniform with variance 1 / fan_in
    }
    return init;
  }

  // `elems` weights of random codes (splitmix64 bytes) in blocks whose scales give the float
  // init's spread (a standard deviation of half_range / sqrt(3)) around a zero mean: d =
  // half_range / the type's `spread` (sqrt(3) x the standard deviation of its weights at d = 1,
  // measured with the gguf package's decoder), the offset scales set to cancel the mean.
  static std::vector<uint8_t> MakeBlocks(const GgmlTypeInfo& info, int64_t elems, const RandomInit& init) {
    std::vector<uint8_t> bytes(elems / info.block_elems * info.block_bytes);
    uint64_t state = init.seed;
    for (size_t i = 0; i < bytes.size(); i += 8) {
      state += 0x9E3779B97F4A7C15ull;
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      std::memcpy(bytes.data() + i, &z, std::min<size_t>(8, bytes.size() - i));
    }
    // Spread, and the offset scale relative to d (Q4_1/Q5_1 add m; the K-quants subtract dmin x m).
    float spread = 8.0f, offset = 0.0f;
    switch (info.type) {
      case GgmlType::kQ4_1: offset = -7.5f; break;
      case GgmlType::kQ5_0: spread = 16.0f; break;
      case GgmlType::kQ5_1: spread = 16.0f; offset = -15.5f; break;
      case GgmlType::kQ8_0: case GgmlType::kQ8_K: spread = 128.0f; break;
      case GgmlType::kIQ4_NL: spread = 116.0f; break;
      case GgmlType::kIQ4_XS: spread = 2157.0f; break;
      case GgmlType::kQ2_K: spread = 24.0f; offset = 1.5f; break;
      case GgmlType::kQ3_K: spread = 75.0f; break;
      case GgmlType::kQ4_K: spread = 450.0f; offset = 7.5f; break;
      case GgmlType::kQ5_K: spread = 913.0f; offset = 15.5f; break;
      case GgmlType::kQ6_K: spread = 2369.0f; break;
      default: break;  // Q4_0
    }
    if (info.type == GgmlType::kF8_E4M3) return MakeF8Blocks(std::move(bytes), init);
    const float d = init.half_range / spread;
    const uint16_t hd = FloatToFp16Bits(d), hm = FloatToFp16Bits(d * offset);
    for (size_t b = 0; b < bytes.size(); b += info.block_bytes) {
      if (info.type == GgmlType::kQ8_K) std::memcpy(bytes.data() + b, &d, 4);
      const std::vector<int> at = GgmlHalfScaleOffsets(info.type);
      for (size_t i = 0; i < at.size(); ++i) std::memcpy(bytes.data() + b + at[i], i == 0 ? &hd : &hm, 2);
    }
    return bytes;
  }

  // F8_E4M3: codes with bit 6 cleared (magnitudes below 2, never the NaN code 0x7f) and one scale
  // that gives the init's standard deviation (half_range / sqrt(3)).
  static std::vector<uint8_t> MakeF8Blocks(std::vector<uint8_t> bytes, const RandomInit& init) {
    double sum_sq = 0;
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x40) == 0)
        sum_sq +=
            static_cast<double>(Fp8E4M3ToFloat(static_cast<uint8_t>(c))) * Fp8E4M3ToFloat(static_cast<uint8_t>(c));
    }
    const float scale = init.half_range / std::sqrt(3.0f) / static_cast<float>(std::sqrt(sum_sq / 128));
    for (size_t b = 0; b < bytes.size(); b += kF8BlockElems + 4) {
      for (int32_t e = 0; e < kF8BlockElems; ++e) bytes[b + e] &= 0xBF;
      std::memcpy(bytes.data() + b + kF8BlockElems, &scale, 4);
    }
    return bytes;
  }

  std::string spec_;
  ModelConfig config_;
  uint64_t seed_;
  std::optional<GgmlType> blocks_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::vector<uint8_t>> made_;
};

std::vector<std::string> PresetNames() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(PresetDir(), ec)) {
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

std::string PresetDir() {
  if (const char* d = std::getenv("KVS_CONFIG_DIR")) return std::string(d) + "/models";
  return std::string(KVS_DEFAULT_CONFIG_DIR) + "/models";
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenRandomWeights(const std::string& spec) {
  std::vector<std::string> parts = absl::StrSplit(spec, ':');
  if (parts.size() < 2 || parts.size() > 4 || parts[1].empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s': write random:<preset>, random:<preset>:<seed>, random:<preset>:<GGML type> or "
                        "random:<preset>:<seed>:<GGML type>",
                        spec));
  }
  uint64_t seed = 0;
  std::optional<GgmlType> blocks;
  for (size_t i = 2; i < parts.size(); ++i) {
    const auto type = GgmlTypeByName(parts[i]);
    const bool last = i + 1 == parts.size();
    if (type && last && LookupGgmlType(static_cast<uint32_t>(*type))->block_elems > 1) {
      blocks = type;
    } else if (i != 2 || !absl::SimpleAtoi(parts[i], &seed)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("'%s': '%s' is neither a seed (a non-negative integer) nor a block type (Q4_0, Q8_0, Q4_K, "
                          "Q6_K, ..., or F8_E4M3)",
                          spec, parts[i]));
    }
  }
  const fs::path file = fs::path(PresetDir()) / (parts[1] + ".json");
  std::ifstream in(file);
  if (!in) {
    return absl::NotFoundError(absl::StrFormat("unknown preset '%s' (known: %s)", parts[1], absl::StrJoin(PresetNames(), ", ")));
  }
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(file.string() + ": not valid JSON");
  KVS_ASSIGN_OR_RETURN(ModelConfig c, ParseHfConfig(j, file.string()));
  c.name = parts[1] + " (random weights)";
  if (blocks) c.name = absl::StrFormat("%s (random %s weights)", parts[1], LookupGgmlType(static_cast<uint32_t>(*blocks))->name);
  return std::unique_ptr<WeightSource>(new RandomWeightSource(spec, std::move(c), seed, blocks));
}

}  // namespace kvs
