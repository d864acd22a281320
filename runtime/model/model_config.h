// Architecture of a Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2, SmolLM2), independent
// of the file it came from. Filled by the GGUF and HF loaders; validated once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace kvs {

enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3 only
  double high_freq_factor = 4.0;  // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelConfig {
  std::string architecture;  // "llama", "mistral" or "qwen2"
  std::string name;
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_layers = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t max_position_embeddings = 0;
  int32_t sliding_window = 0;  // 0: none. kvshard refuses contexts longer than a window.
  float rms_norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v projections (Qwen2)
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  // Checks sizes are positive and consistent (heads divide, head_dim even).
  absl::Status Validate() const;
  // Longest context the model supports (position embeddings, capped by a sliding window).
  int32_t MaxContext() const;
  int64_t ParameterCount() const;
  // Bytes of K and V for one token over all layers at `bytes_per_element`.
  int64_t KvBytesPerToken(int bytes_per_element) const;
};

// Parses a Hugging Face config.json (already parsed to JSON). `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseHfConfig(const nlohmann::json& j, const std::string& source);

// Per-pair inverse rotary frequencies [head_dim / 2], with the configured scaling applied,
// computed as HF transformers does (float32). `freq_factors`, when given (GGUF rope_freqs),
// divides each frequency instead of the llama3 formula.
std::vector<float> ComputeRopeInvFreq(const ModelConfig& c, const std::vector<float>* freq_factors);

}  // namespace kvs
