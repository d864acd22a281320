#include "runtime/model/model_config.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvs {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& source, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s", source, msg));
}

// Reads an integer field; `required` fields must be present and non-null.
absl::StatusOr<int64_t> IntField(const json& j, const char* key, const std::string& source,
                                 bool required, int64_t fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Bad(source, absl::StrFormat("missing integer field '%s'", key));
    return fallback;
  }
  if (!it->is_number_integer()) return Bad(source, absl::StrFormat("field '%s' must be an integer", key));
  return it->get<int64_t>();
}

absl::StatusOr<double> FloatField(const json& j, const char* key, const std::string& source,
                                  double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return Bad(source, absl::StrFormat("field '%s' must be a number", key));
  return it->get<double>();
}

absl::StatusOr<bool> BoolField(const json& j, const char* key, const std::string& source, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Bad(source, absl::StrFormat("field '%s' must be true or false", key));
  return it->get<bool>();
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5) -> RopeScaling.
absl::StatusOr<RopeScaling> ParseRopeScaling(const json& r, const std::string& source) {
  RopeScaling s;
  if (r.is_null()) return s;
  if (!r.is_object()) return Bad(source, "rope_scaling must be an object or null");
  std::string type = "default";
  if (auto it = r.find("rope_type"); it != r.end() && it->is_string()) type = it->get<std::string>();
  else if (auto it2 = r.find("type"); it2 != r.end() && it2->is_string()) type = it2->get<std::string>();
  if (type == "default") return s;
  KVS_ASSIGN_OR_RETURN(s.factor, FloatField(r, "factor", source, 0.0));
  if (!(s.factor >= 1.0)) return Bad(source, "rope_scaling.factor must be >= 1");
  if (type == "linear") {
    s.type = RopeScalingType::kLinear;
  } else if (type == "llama3") {
    s.type = RopeScalingType::kLlama3;
    KVS_ASSIGN_OR_RETURN(s.low_freq_factor, FloatField(r, "low_freq_factor", source, 1.0));
    KVS_ASSIGN_OR_RETURN(s.high_freq_factor, FloatField(r, "high_freq_factor", source, 4.0));
    KVS_ASSIGN_OR_RETURN(s.original_max_position_embeddings,
                         IntField(r, "original_max_position_embeddings", source, false, 8192));
    if (!(s.high_freq_factor > s.low_freq_factor) || s.low_freq_factor <= 0 ||
        s.original_max_position_embeddings <= 0) {
      return Bad(source, "rope_scaling (llama3) needs high_freq_factor > low_freq_factor > 0");
    }
  } else {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: rope scaling type '%s' is not supported (supported: default, linear, llama3)", source, type));
  }
  return s;
}


// Gemma 3 (text): four norms per layer, q/k norms, GeGLU, embeddings scaled by sqrt(hidden), the
// softmax scaled by query_pre_attn_scalar, windowed layers (layer_types, or every
// sliding_window_pattern-th layer global in older configs) with a rope base of their own, and
// the rope scaling (if any) on the global layers only.
// transformers' `layer_types` (Gemma 3, Qwen2/Qwen3, ...): each sliding_attention layer attends
// to the last `window` tokens. False when the config has none.
absl::StatusOr<bool> ParseLayerTypes(const json& j, const std::string& source, int32_t window, ModelConfig& c) {
  const auto lt = j.find("layer_types");
  if (lt == j.end() || lt->is_null()) return false;
  c.layer_windows.assign(c.num_layers, 0);
  if (!lt->is_array() || static_cast<int64_t>(lt->size()) != c.num_layers) {
    return Bad(source, absl::StrFormat("layer_types must list one type per layer (%d)", c.num_layers));
  }
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const json& t = (*lt)[l];
    const std::string type = t.is_string() ? t.get<std::string>() : t.dump();
    if (type == "sliding_attention") {
      c.layer_windows[l] = window;
    } else if (type != "full_attention") {
      return absl::UnimplementedError(absl::StrFormat(
          "%s: layer type '%s' is not supported (supported: sliding_attention, full_attention)", source, type));
    }
  }
  // A config listing only full_attention layers has no windows at all.
  if (std::all_of(c.layer_windows.begin(), c.layer_windows.end(), [](int32_t w) { return w == 0; })) c.layer_windows.clear();
  return true;
}

absl::Status ParseGemma3(const json& j, const std::string& source, ModelConfig& c) {
  KVS_ASSIGN_OR_RETURN(double scalar, FloatField(j, "query_pre_attn_scalar", source, c.head_dim));
  if (!(scalar > 0)) return Bad(source, "query_pre_attn_scalar must be positive");
  c.attention_scale = static_cast<float>(1.0 / std::sqrt(scalar));
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
    if (auto it = j.find(key); it != j.end() && !it->is_null()) {
      return absl::UnimplementedError(absl::StrFormat("%s: %s is not supported (Gemma 2's; Gemma 3 has none)", source, key));
    }
  }
  KVS_ASSIGN_OR_RETURN(bool bidirectional, BoolField(j, "use_bidirectional_attention", source, false));
  if (bidirectional) return absl::UnimplementedError(source + ": use_bidirectional_attention=true is not supported");
  KVS_ASSIGN_OR_RETURN(int64_t window, IntField(j, "sliding_window", source, false, 4096));
  if (window <= 0 || window > (1ll << 30)) return Bad(source, "sliding_window must be positive");
  c.sliding_window = static_cast<int32_t>(window);
  KVS_ASSIGN_OR_RETURN(const bool listed, ParseLayerTypes(j, source, c.sliding_window, c));
  if (!listed) {
    int64_t pattern = 6;
    for (const char* key : {"sliding_window_pattern", "_sliding_window_pattern"}) {
      if (j.contains(key)) {
        KVS_ASSIGN_OR_RETURN(pattern, IntField(j, key, source, false, 6));
      }
    }
    if (pattern <= 0) return Bad(source, "sliding_window_pattern must be positive");
    c.layer_windows = WindowsEveryNthGlobal(c.num_layers, c.sliding_window, pattern);
  }
  KVS_ASSIGN_OR_RETURN(c.rope_local_theta, FloatField(j, "rope_local_base_freq", source, 10000.0));
  // transformers 5: rope_parameters per layer type.
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object() && rp->contains("sliding_attention")) {
    KVS_ASSIGN_OR_RETURN(c.rope_local_theta, FloatField((*rp)["sliding_attention"], "rope_theta", source, 10000.0));
    if (auto full = rp->find("full_attention"); full != rp->end()) {
      KVS_ASSIGN_OR_RETURN(c.rope_theta, FloatField(*full, "rope_theta", source, 1000000.0));
      KVS_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(*full, source));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void SetGemma3Family(ModelConfig& c) {
  c.qk_norm = true;
  c.sandwich_norms = true;
  c.activation = Activation::kGeluTanh;
  c.embedding_scale = std::sqrt(static_cast<float>(c.hidden_size));
}

std::vector<int32_t> WindowsEveryNthGlobal(int32_t layers, int32_t window, int64_t pattern) {
  std::vector<int32_t> w(layers);
  for (int32_t l = 0; l < layers; ++l) w[l] = pattern == 0 || l % pattern < pattern - 1 ? window : 0;
  return w;
}

absl::Status ModelConfig::Validate() const {
  const std::string who = name.empty() ? architecture : name;
  auto positive = [&](int64_t v, const char* field) -> absl::Status {
    if (v <= 0) return absl::InvalidArgumentError(absl::StrFormat("%s: %s must be positive, got %d", who, field, v));
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  KVS_RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  KVS_RETURN_IF_ERROR(positive(intermediate_size, "intermediate_size"));
  KVS_RETURN_IF_ERROR(positive(num_layers, "num_layers"));
  KVS_RETURN_IF_ERROR(positive(num_q_heads, "num_attention_heads"));
  KVS_RETURN_IF_ERROR(positive(num_kv_heads, "num_key_value_heads"));
  KVS_RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  KVS_RETURN_IF_ERROR(positive(max_position_embeddings, "max_position_embeddings"));
  // Past the largest real models by a wide margin (Llama 3.1 405B: 126 layers, 16,384 wide,
  // 53,248 FFN; Gemma 3: 262K vocabulary; Llama 4: 10M context): a header claiming more is
  // corrupt, and is refused here rather than by an allocation failure later.
  auto at_most = [&](int64_t v, int64_t limit, const char* field) -> absl::Status {
    if (v > limit) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s %d is past kvshard's limit of %d (a corrupt header?)", who, field, v, limit));
    }
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(at_most(num_layers, 1024, "num_layers"));
  KVS_RETURN_IF_ERROR(at_most(hidden_size, 1 << 17, "hidden_size"));
  KVS_RETURN_IF_ERROR(at_most(intermediate_size, 1 << 20, "intermediate_size"));
  KVS_RETURN_IF_ERROR(at_most(vocab_size, 1 << 23, "vocab_size"));
  KVS_RETURN_IF_ERROR(at_most(num_q_heads, 4096, "num_attention_heads"));
  KVS_RETURN_IF_ERROR(at_most(max_position_embeddings, 1 << 27, "max_position_embeddings"));
  if (num_q_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d attention heads are not a multiple of %d KV heads", who, num_q_heads, num_kv_heads));
  }
  if (head_dim % 2 != 0 || head_dim > 512) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: head_dim %d must be even and <= 512", who, head_dim));
  }
  if (!(rms_norm_eps > 0) || !(rope_theta > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: rms_norm_eps and rope_theta must be positive", who));
  }
  if (!(rope_local_theta >= 0) || !(embedding_scale > 0) || !(attention_scale >= 0) || !std::isfinite(embedding_scale) ||
      !std::isfinite(attention_scale)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: rope_local_theta %g, embedding scale %g or attention scale %g out of range", who, rope_local_theta,
        embedding_scale, attention_scale));
  }
  if (!layer_windows.empty()) {
    if (static_cast<int32_t>(layer_windows.size()) != num_layers) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %d layer windows for %d layers", who,
                                                        layer_windows.size(), num_layers));
    }
    for (int32_t w : layer_windows) {
      if (w < 0) return absl::InvalidArgumentError(absl::StrFormat("%s: a layer window of %d tokens", who, w));
    }
  }
  return absl::OkStatus();
}

int32_t ModelConfig::MaxContext() const { return max_position_embeddings; }

float ModelConfig::AttentionScale() const {
  return attention_scale > 0 ? attention_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t h = hidden_size;
  const int64_t q = static_cast<int64_t>(num_q_heads) * head_dim;
  const int64_t kv = static_cast<int64_t>(num_kv_heads) * head_dim;
  int64_t per_layer = h * (q + 2 * kv) + q * h + 3 * h * intermediate_size + 2 * h;
  if (attention_bias) per_layer += q + 2 * kv;
  if (qk_norm) per_layer += 2 * head_dim;
  if (sandwich_norms) per_layer += 2 * h;
  const int64_t embed = static_cast<int64_t>(vocab_size) * h;
  return per_layer * num_layers + embed * (tie_word_embeddings ? 1 : 2) + h;
}

int64_t ModelConfig::KvBytesPerToken(int bytes_per_element) const {
  return 2ll * num_layers * num_kv_heads * head_dim * bytes_per_element;
}

absl::StatusOr<ModelConfig> ParseHfConfig(const json& j, const std::string& source) {
  if (!j.is_object()) return Bad(source, "config.json must hold a JSON object");
  ModelConfig c;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) return Bad(source, "missing string field 'model_type'");
  c.architecture = mt->get<std::string>();
  if (c.architecture == "gemma3") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: model_type 'gemma3' is Gemma 3 with its vision tower; kvshard runs the text model (model_type "
        "'gemma3_text', as google/gemma-3-270m and -1b ship)", source));
  }
  if (c.architecture == "gemma3_text") c.architecture = "gemma3";
  if (c.architecture != "llama" && c.architecture != "mistral" && c.architecture != "qwen2" &&
      c.architecture != "qwen3" && c.architecture != "gemma3") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: model_type '%s' is not supported (supported: llama, mistral, qwen2, qwen3, gemma3_text)", source,
        c.architecture));
  }
  c.name = c.architecture;
  KVS_ASSIGN_OR_RETURN(int64_t vocab, IntField(j, "vocab_size", source, true, 0));
  KVS_ASSIGN_OR_RETURN(int64_t hidden, IntField(j, "hidden_size", source, true, 0));
  KVS_ASSIGN_OR_RETURN(int64_t inter, IntField(j, "intermediate_size", source, true, 0));
  KVS_ASSIGN_OR_RETURN(int64_t layers, IntField(j, "num_hidden_layers", source, true, 0));
  KVS_ASSIGN_OR_RETURN(int64_t heads, IntField(j, "num_attention_heads", source, true, 0));
  KVS_ASSIGN_OR_RETURN(int64_t kv_heads, IntField(j, "num_key_value_heads", source, false, heads));
  if (heads <= 0) return Bad(source, "num_attention_heads must be positive");
  KVS_ASSIGN_OR_RETURN(int64_t head_dim, IntField(j, "head_dim", source, false, hidden / heads));
  KVS_ASSIGN_OR_RETURN(int64_t max_pos, IntField(j, "max_position_embeddings", source, false, 4096));
  for (int64_t v : {vocab, hidden, inter, layers, heads, kv_heads, head_dim, max_pos}) {
    if (v <= 0 || v > (1ll << 31) - 1) return Bad(source, "sizes must be positive 32-bit integers");
  }
  c.vocab_size = static_cast<int32_t>(vocab);
  c.hidden_size = static_cast<int32_t>(hidden);
  c.intermediate_size = static_cast<int32_t>(inter);
  c.num_layers = static_cast<int32_t>(layers);
  c.num_q_heads = static_cast<int32_t>(heads);
  c.num_kv_heads = static_cast<int32_t>(kv_heads);
  c.head_dim = static_cast<int32_t>(head_dim);
  c.max_position_embeddings = static_cast<int32_t>(max_pos);
  if (c.architecture == "gemma3") SetGemma3Family(c);  // before hidden_activation, which may say otherwise
  KVS_ASSIGN_OR_RETURN(double eps, FloatField(j, "rms_norm_eps", source, 1e-6));
  c.rms_norm_eps = static_cast<float>(eps);
  // transformers leaves a default out of config.json: Gemma's is tied, the others' untied.
  KVS_ASSIGN_OR_RETURN(c.tie_word_embeddings, BoolField(j, "tie_word_embeddings", source, c.architecture == "gemma3"));

  // transformers 5 keeps theta and scaling together in rope_parameters; 4.x uses two fields.
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    KVS_ASSIGN_OR_RETURN(c.rope_theta, FloatField(*rp, "rope_theta", source, 10000.0));
    KVS_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(*rp, source));
  } else {
    KVS_ASSIGN_OR_RETURN(c.rope_theta, FloatField(j, "rope_theta", source, 10000.0));
    if (auto rs = j.find("rope_scaling"); rs != j.end()) {
      KVS_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(*rs, source));
    }
  }

  if (c.architecture == "qwen3") c.qk_norm = true;
  if (c.architecture == "gemma3") {
    // Gemma 3's windows are per layer (ParseGemma3), not a cap on the context.
  } else if (c.architecture == "qwen2" || c.architecture == "qwen3") {
    c.attention_bias = c.architecture == "qwen2";  // Qwen2 always has q/k/v bias and no o bias; Qwen3 none
    // As transformers: with use_sliding_window, the layers from max_window_layers on attend to a
    // window (or those `layer_types` lists as sliding_attention).
    KVS_ASSIGN_OR_RETURN(bool use_window, BoolField(j, "use_sliding_window", source, false));
    if (use_window) {
      KVS_ASSIGN_OR_RETURN(int64_t w, IntField(j, "sliding_window", source, false, 4096));
      if (w <= 0 || w > (1ll << 30)) return Bad(source, "sliding_window must be positive");
      c.sliding_window = static_cast<int32_t>(w);
      KVS_ASSIGN_OR_RETURN(const bool listed, ParseLayerTypes(j, source, c.sliding_window, c));
      if (!listed) {
        KVS_ASSIGN_OR_RETURN(int64_t first, IntField(j, "max_window_layers", source, false, 28));
        c.layer_windows.assign(c.num_layers, 0);
        for (int32_t l = std::max<int64_t>(first, 0); l < c.num_layers; ++l) c.layer_windows[l] = c.sliding_window;
      }
    }
  } else {
    // Mistral: every layer attends to the last `sliding_window` tokens (none: the whole context).
    KVS_ASSIGN_OR_RETURN(c.attention_bias, BoolField(j, "attention_bias", source, false));
    KVS_ASSIGN_OR_RETURN(int64_t w, IntField(j, "sliding_window", source, false, 0));
    if (w < 0 || w > (1ll << 30)) return Bad(source, "sliding_window must be positive");
    c.sliding_window = static_cast<int32_t>(w);
    if (w > 0) c.layer_windows.assign(c.num_layers, c.sliding_window);
  }
  // A window no shorter than the model's context changes nothing: every layer stays global (and
  // takes the faster kernels and every KV format).
  if (c.sliding_window >= c.max_position_embeddings ||
      std::all_of(c.layer_windows.begin(), c.layer_windows.end(), [](int32_t w) { return w == 0; })) {
    c.layer_windows.clear();
  }
  if (auto mlp_bias = j.find("mlp_bias"); mlp_bias != j.end() && mlp_bias->is_boolean() && mlp_bias->get<bool>()) {
    return absl::UnimplementedError(source + ": mlp_bias=true is not supported");
  }
  // Gemma names the field hidden_activation; the others hidden_act.
  for (const char* key : {"hidden_act", "hidden_activation"}) {
    auto act = j.find(key);
    if (act == j.end() || act->is_null()) continue;
    const std::string name = act->is_string() ? act->get<std::string>() : act->dump();
    if (name == "silu") {
      c.activation = Activation::kSilu;
    } else if (name == "gelu_pytorch_tanh") {
      c.activation = Activation::kGeluTanh;
    } else {
      return absl::UnimplementedError(absl::StrFormat(
          "%s: %s '%s' is not supported (supported: silu, gelu_pytorch_tanh)", source, key, name));
    }
  }
  if (c.architecture == "gemma3") KVS_RETURN_IF_ERROR(ParseGemma3(j, source, c));
  KVS_ASSIGN_OR_RETURN(int64_t bos, IntField(j, "bos_token_id", source, false, -1));
  c.bos_token_id = static_cast<int32_t>(bos);
  if (auto e = j.find("eos_token_id"); e != j.end()) {
    if (e->is_number_integer()) {
      c.eos_token_ids.push_back(e->get<int32_t>());
    } else if (e->is_array()) {
      for (const auto& v : *e) {
        if (!v.is_number_integer()) return Bad(source, "eos_token_id entries must be integers");
        c.eos_token_ids.push_back(v.get<int32_t>());
      }
    } else if (!e->is_null()) {
      return Bad(source, "eos_token_id must be an integer or a list of integers");
    }
  }
  KVS_RETURN_IF_ERROR(c.Validate());
  return c;
}

std::vector<float> ComputeRopeInvFreq(const ModelConfig& c, const std::vector<float>* freq_factors) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0f / static_cast<float>(std::pow(static_cast<float>(c.rope_theta), exponent));
  }
  if (freq_factors != nullptr) {
    for (int i = 0; i < half; ++i) inv[i] /= (*freq_factors)[i];
    return inv;
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScalingType::kLinear) {
    for (float& f : inv) f = static_cast<float>(f / s.factor);
  } else if (s.type == RopeScalingType::kLlama3) {
    // transformers' _compute_llama3_parameters: long wavelengths are divided by `factor`,
    // short ones kept, and the band in between interpolated smoothly.
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_ctx / s.low_freq_factor;
    const double high_freq_wavelen = old_ctx / s.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_freq_wavelen) {
        f = static_cast<float>(f / s.factor);
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / s.factor + smooth * f);
      }
    }
  }
  return inv;
}

std::vector<float> ComputeLocalRopeInvFreq(const ModelConfig& c) {
  ModelConfig local = c;
  local.rope_theta = c.rope_local_theta > 0 ? c.rope_local_theta : c.rope_theta;
  local.rope_scaling = RopeScaling{};
  return ComputeRopeInvFreq(local, nullptr);
}

}  // namespace kvs
