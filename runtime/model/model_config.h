// Architecture of a Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2, Qwen3, SmolLM2, Gemma 3),
// independent of the file it came from. Filled by the GGUF and HF loaders; validated once.
// Llama is the base; the other families differ by the switches below (qk_norm, sandwich_norms,
// activation, embedding_scale, layer_windows, ...), each applied by the one forward pass.
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

// The gated MLP's activation: silu (SwiGLU, Llama) or GELU with the tanh approximation (GeGLU,
// Gemma's gelu_pytorch_tanh).
enum class Activation { kSilu, kGeluTanh };

struct ModelConfig {
  std::string architecture;  // "llama", "mistral", "qwen2", "qwen3" or "gemma3"
  std::string name;
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_layers = 0;
  int32_t num_q_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t max_position_embeddings = 0;
  // The window of the sliding-window layers (Mistral, Qwen2 with use_sliding_window, Gemma 3);
  // 0: none. Which layers use it is layer_windows.
  int32_t sliding_window = 0;
  // Per layer, how many of the latest keys (the query's own included) a query attends to; 0: all.
  // Empty: every layer global. Gemma 3 interleaves windowed layers with global ones.
  std::vector<int32_t> layer_windows;
  float rms_norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v projections (Qwen2)
  bool qk_norm = false;         // RMSNorm over each q and k head before rope (Qwen3, Gemma 3)
  // Gemma's four norms per layer: the attention and MLP outputs are normalized again before they
  // join the residual (post_attention / post_feedforward), and the MLP has a norm of its own.
  bool sandwich_norms = false;
  Activation activation = Activation::kSilu;
  float embedding_scale = 1.0f;  // embeddings times this (Gemma: sqrt(hidden_size))
  float attention_scale = 0.0f;  // softmax scale of q.k; 0: 1/sqrt(head_dim)
  // Rope base of the windowed layers when it differs from rope_theta (Gemma 3: 10,000 local,
  // 1M global); 0: rope_theta. Rope scaling applies to the global layers only, as in Gemma 3.
  double rope_local_theta = 0.0;
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  // Checks sizes are positive and consistent (heads divide, head_dim even).
  absl::Status Validate() const;
  // Longest context the model supports (position embeddings, capped by a sliding window that
  // layer_windows does not apply).
  int32_t MaxContext() const;
  // Layer l's window (0: global).
  int32_t LayerWindow(int32_t l) const { return layer_windows.empty() ? 0 : layer_windows[l]; }
  // The softmax scale of q.k.
  float AttentionScale() const;
  // Whether the windowed layers rotate with a rope table of their own (rope_local_theta).
  bool HasLocalRope() const { return rope_local_theta > 0 && !layer_windows.empty(); }
  int64_t ParameterCount() const;
  // Bytes of K and V for one token over all layers at `bytes_per_element`.
  int64_t KvBytesPerToken(int bytes_per_element) const;
};

// What every Gemma 3 is, whichever file it came from: q/k norms, the four norms per layer, GeGLU
// and embeddings times sqrt(hidden_size) (set after hidden_size).
void SetGemma3Family(ModelConfig& c);
// Per-layer windows where every `pattern`-th layer is global (layers pattern - 1, 2 pattern - 1,
// ...) and the others see `window` keys; pattern 0 windows every layer (llama.cpp's reading).
std::vector<int32_t> WindowsEveryNthGlobal(int32_t layers, int32_t window, int64_t pattern);

// Parses a Hugging Face config.json (already parsed to JSON). `source` names the file in errors.
absl::StatusOr<ModelConfig> ParseHfConfig(const nlohmann::json& j, const std::string& source);

// Per-pair inverse rotary frequencies [head_dim / 2], with the configured scaling applied,
// computed as HF transformers does (float32). `freq_factors`, when given (GGUF rope_freqs),
// divides each frequency instead of the llama3 formula.
std::vector<float> ComputeRopeInvFreq(const ModelConfig& c, const std::vector<float>* freq_factors);
// The windowed layers' table when they have a rope base of their own (rope_local_theta), unscaled.
std::vector<float> ComputeLocalRopeInvFreq(const ModelConfig& c);

}  // namespace kvs
