// Synthetic models: a preset's shape with seeded random weights (no download). Matrices are
// uniform with the variance of 1/fan_in so activations stay O(1) through the layers; norms
// are 1 +- 0.1. ReadF32 yields the same values the backends' FillRandom writes.
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model/weight_source.h"

#ifndef KVS_DEFAULT_CONFIG_DIR
#define KVS_DEFAULT_CONFIG_DIR "configs"
#endif

namespace kvs {
namespace {

namespace fs = std::filesystem;

class RandomWeightSource final : public WeightSource {
 public:
  RandomWeightSource(std::string spec, ModelConfig c, uint64_t seed) : spec_(std::move(spec)), config_(std::move(c)), seed_(seed) {}

  const ModelConfig& config() const override { return config_; }
  std::string path() const override { return spec_; }
  std::string format() const override { return "random"; }
  bool Has(const std::string& name) const override {
    return !(name == "lm_head.weight" && config_.tie_word_embeddings) &&
           !(name.find("_proj.bias") != std::string::npos && !config_.attention_bias);
  }

  std::optional<RandomInit> RandomInitFor(const std::string& name) const override {
    const ModelConfig& c = config_;
    const bool norm = name.find("norm") != std::string::npos;
    const bool bias = name.find(".bias") != std::string::npos;
    float fan_in = static_cast<float>(c.hidden_size);
    if (name.find("o_proj") != std::string::npos) fan_in = static_cast<float>(c.num_q_heads) * c.head_dim;
    if (name.find("down_proj") != std::string::npos) fan_in = static_cast<float>(c.intermediate_size);
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

  absl::Status ReadF32(const std::string& name, std::span<const int64_t> shape, std::span<float> out) const override {
    if (!Has(name)) return absl::NotFoundError(absl::StrFormat("%s: no tensor '%s'", spec_, name));
    const RandomInit init = *RandomInitFor(name);
    for (size_t i = 0; i < out.size(); ++i) out[i] = init.mean + init.half_range * UniformSigned(init.seed, i);
    return absl::OkStatus();
  }

  std::vector<TensorSummary> Summaries() const override {
    return {{"(random weights, seed " + std::to_string(seed_) + ")", "random", {config_.ParameterCount()}}};
  }

 private:
  std::string spec_;
  ModelConfig config_;
  uint64_t seed_;
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
  if (parts.size() < 2 || parts.size() > 3 || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s': write random:<preset> or random:<preset>:<seed>", spec));
  }
  uint64_t seed = 0;
  if (parts.size() == 3 && !absl::SimpleAtoi(parts[2], &seed)) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s': the seed must be a non-negative integer", spec));
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
  return std::unique_ptr<WeightSource>(new RandomWeightSource(spec, std::move(c), seed));
}

}  // namespace kvs
