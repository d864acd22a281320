// WeightSource over a GGUF file: llama.cpp tensor names -> HF names, GGML types -> float32,
// and llama.cpp's Q/K permutation undone.
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/common/ggml_decode.h"
#include "kernels/common/status_macros.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/weight_source.h"

namespace kvs {
namespace {

// HF per-layer suffix -> llama.cpp per-layer name.
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
// Gemma's four norms per layer: HF's post_attention_layernorm is the attention output's norm
// there, and the MLP's own norm is pre_feedforward_layernorm (llama.cpp's ffn_norm).
constexpr std::pair<const char*, const char*> kSandwichNames[] = {
    {"post_attention_layernorm.weight", "post_attention_norm.weight"},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight"},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"},
};

std::string ToGgufName(const std::string& hf, bool sandwich_norms) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  std::vector<std::string> parts = absl::StrSplit(hf, absl::MaxSplits('.', 3));
  int layer;
  if (parts.size() == 4 && parts[0] == "model" && parts[1] == "layers" && absl::SimpleAtoi(parts[2], &layer)) {
    if (sandwich_norms) {
      for (const auto& [suffix, gguf] : kSandwichNames) {
        if (parts[3] == suffix) return absl::StrFormat("blk.%d.%s", layer, gguf);
      }
    }
    for (const auto& [suffix, gguf] : kLayerNames) {
      if (parts[3] == suffix) return absl::StrFormat("blk.%d.%s", layer, gguf);
    }
  }
  return "";
}

class GgufWeightSource final : public WeightSource {
 public:
  GgufWeightSource(std::unique_ptr<GgufFile> file, ModelConfig config, bool permuted_qk)
      : file_(std::move(file)), config_(std::move(config)), permuted_qk_(permuted_qk) {}

  const ModelConfig& config() const override { return config_; }
  std::string path() const override { return file_->path(); }
  std::string format() const override { return "gguf"; }
  GgufFile* gguf() const override { return file_.get(); }

  bool Has(const std::string& hf_name) const override {
    const std::string g = ToGgufName(hf_name, config_.sandwich_norms);
    return !g.empty() && file_->FindTensor(g) != nullptr;
  }

  absl::Status ReadF32(const std::string& hf_name, std::span<const int64_t> shape,
                       std::span<float> out) const override {
    KVS_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Find(hf_name, shape));
    KVS_CHECK(static_cast<int64_t>(out.size()) == t->NumElements());
    KVS_ASSIGN_OR_RETURN(auto bytes, file_->TensorBytes(*t));
    DequantizeToF32(static_cast<GgmlType>(t->type), bytes, out);
    if (Permuted(hf_name)) {
      const int heads = absl::StrContains(hf_name, "q_proj") ? config_.num_q_heads : config_.num_kv_heads;
      Unpermute(out, heads, shape.size() == 2 ? shape[1] : 1);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string& hf_name,
                                                   std::span<const int64_t> shape) const override {
    KVS_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Find(hf_name, shape));
    if (shape.size() != 2) return std::nullopt;
    KVS_ASSIGN_OR_RETURN(auto bytes, file_->TensorBytes(*t));
    RawTensor raw{static_cast<GgmlType>(t->type), bytes, {}, nullptr};  // the file's mapping owns the bytes
    if (Permuted(hf_name)) {
      // Q/K rows in llama.cpp's order: within each head, file row 2i + j is HF row j * dim/2 + i.
      const int heads = absl::StrContains(hf_name, "q_proj") ? config_.num_q_heads : config_.num_kv_heads;
      const int64_t rows = shape[0], dim = rows / heads, half = dim / 2;
      raw.row_order.resize(rows);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < half; ++i)
          for (int64_t j = 0; j < 2; ++j) raw.row_order[h * dim + j * half + i] = static_cast<int32_t>(h * dim + 2 * i + j);
    }
    return raw;
  }

  std::optional<GgmlType> StoredBlockType(const std::string& hf_name) const override {
    const std::string g = ToGgufName(hf_name, config_.sandwich_norms);
    const GgufTensorInfo* t = g.empty() ? nullptr : file_->FindTensor(g);
    if (t == nullptr || t->dims.size() != 2) return std::nullopt;
    const auto info = LookupGgmlType(t->type);
    if (!info || info->block_elems == 1) return std::nullopt;
    return info->type;
  }

  std::optional<std::vector<float>> RopeFreqFactors() const override {
    const GgufTensorInfo* t = file_->FindTensor("rope_freqs.weight");
    if (t == nullptr) return std::nullopt;
    std::vector<float> f(t->NumElements());
    auto bytes = file_->TensorBytes(*t);
    if (!bytes.ok() || static_cast<int>(f.size()) != config_.head_dim / 2) return std::nullopt;
    DequantizeToF32(static_cast<GgmlType>(t->type), *bytes, f);
    return f;
  }

  std::vector<TensorSummary> Summaries() const override {
    std::vector<TensorSummary> s;
    for (const auto& t : file_->tensors()) {
      s.push_back({t.name, std::string(GgmlTypeNameForError(t.type)),
                   std::vector<int64_t>(t.dims.rbegin(), t.dims.rend())});
    }
    return s;
  }

 private:
  // The file's tensor for `hf_name`, with the shape the caller expects.
  absl::StatusOr<const GgufTensorInfo*> Find(const std::string& hf_name, std::span<const int64_t> shape) const {
    const std::string g = ToGgufName(hf_name, config_.sandwich_norms);
    const GgufTensorInfo* t = g.empty() ? nullptr : file_->FindTensor(g);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrFormat("%s: tensor '%s' (%s) is missing", path(),
                                                 g.empty() ? hf_name : g, hf_name));
    }
    const std::vector<int64_t> hf_shape(t->dims.rbegin(), t->dims.rend());
    if (!std::equal(hf_shape.begin(), hf_shape.end(), shape.begin(), shape.end())) {
      return absl::InvalidArgumentError(ShapeMismatch(path(), g, hf_shape, shape));
    }
    return t;
  }
  // Q/K projections whose rows llama.cpp's converter permuted.
  bool Permuted(const std::string& hf_name) const {
    return permuted_qk_ && (absl::EndsWith(hf_name, "q_proj.weight") || absl::EndsWith(hf_name, "k_proj.weight") ||
                            absl::EndsWith(hf_name, "q_proj.bias") || absl::EndsWith(hf_name, "k_proj.bias"));
  }
  // llama.cpp's converter stores each head's rows as (i, j) pairs interleaved: GGUF row
  // h*D + 2i + j holds HF row h*D + j*(D/2) + i. Undo it so HF "rotate_half" rope applies.
  void Unpermute(std::span<float> w, int heads, int64_t cols) const {
    const int64_t rows = static_cast<int64_t>(w.size()) / cols;
    const int64_t dim = rows / heads;
    const int64_t half = dim / 2;
    std::vector<float> tmp(w.begin(), w.end());
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        for (int64_t j = 0; j < 2; ++j) {
          const float* src = tmp.data() + (h * dim + 2 * i + j) * cols;
          std::memcpy(w.data() + (h * dim + j * half + i) * cols, src, cols * sizeof(float));
        }
      }
    }
  }

  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  bool permuted_qk_;
};

// Gemma 3 as llama.cpp reads and runs it: what its GGUF may not store, llama.cpp fixes in code,
// and so does this — the layer pattern (gemma3.attention.sliding_window_pattern: a bool per layer,
// or N: every Nth layer global; absent: 6), the windowed layers' rope base
// (gemma3.rope.freq_base_swa; absent: 10,000), and the softmax scale 1/sqrt(head_dim) except for
// the 27B model (62 layers), whose query_pre_attn_scalar is hidden / heads. Norm weights are stored
// as 1 + w already.
absl::Status Gemma3FromGguf(const GgufFile& f, ModelConfig& c) {
  SetGemma3Family(c);
  const float scalar = c.num_layers == 62 ? static_cast<float>(c.hidden_size / c.num_q_heads) : c.head_dim;
  c.attention_scale = 1.0f / std::sqrt(scalar);
  if (!f.Has("gemma3.attention.sliding_window")) return absl::OkStatus();  // every layer global, as llama.cpp
  KVS_ASSIGN_OR_RETURN(uint64_t window, f.GetUint("gemma3.attention.sliding_window"));
  if (window == 0 || window > (1u << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: gemma3.attention.sliding_window = %d is out of range",
                                                      f.path(), window));
  }
  c.sliding_window = static_cast<int32_t>(window);
  const std::string pattern_key = "gemma3.attention.sliding_window_pattern";
  if (auto per_layer = f.Has(pattern_key) ? f.GetBoolArray(pattern_key) : absl::NotFoundError(""); per_layer.ok()) {
    if (static_cast<int64_t>((*per_layer)->size()) != c.num_layers) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %s lists %d layers, the model has %d", f.path(), pattern_key,
                                                        (*per_layer)->size(), c.num_layers));
    }
    c.layer_windows.assign(c.num_layers, 0);
    for (int32_t l = 0; l < c.num_layers; ++l) c.layer_windows[l] = (**per_layer)[l] ? c.sliding_window : 0;
  } else {
    uint64_t pattern = 6;
    if (f.Has(pattern_key)) {
      KVS_ASSIGN_OR_RETURN(pattern, f.GetUint(pattern_key));
    }
    // llama.cpp's set_swa_pattern: 0 windows every layer, 1 none.
    c.layer_windows = WindowsEveryNthGlobal(c.num_layers, c.sliding_window, static_cast<int64_t>(pattern));
  }
  c.rope_local_theta = 10000.0;
  if (f.Has("gemma3.rope.freq_base_swa")) {
    KVS_ASSIGN_OR_RETURN(c.rope_local_theta, f.GetFloat("gemma3.rope.freq_base_swa"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& f) {
  ModelConfig c;
  KVS_ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3" && arch != "gemma3") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: architecture '%s' is not supported (supported: llama, qwen2, qwen3, gemma3)", f.path(), arch));
  }
  c.architecture = arch;
  c.name = f.Has("general.name") ? f.GetString("general.name").value_or(arch) : arch;
  auto u32 = [&](const std::string& key, int32_t& dst) -> absl::Status {
    KVS_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(arch + "." + key));
    if (v == 0 || v > (1u << 31) - 1) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %s.%s = %d is out of range", f.path(), arch, key, v));
    }
    dst = static_cast<int32_t>(v);
    return absl::OkStatus();
  };
  KVS_RETURN_IF_ERROR(u32("block_count", c.num_layers));
  KVS_RETURN_IF_ERROR(u32("embedding_length", c.hidden_size));
  KVS_RETURN_IF_ERROR(u32("feed_forward_length", c.intermediate_size));
  KVS_RETURN_IF_ERROR(u32("attention.head_count", c.num_q_heads));
  KVS_RETURN_IF_ERROR(u32("context_length", c.max_position_embeddings));
  c.num_kv_heads = c.num_q_heads;
  if (f.Has(arch + ".attention.head_count_kv")) KVS_RETURN_IF_ERROR(u32("attention.head_count_kv", c.num_kv_heads));
  c.head_dim = c.hidden_size / c.num_q_heads;
  if (f.Has(arch + ".attention.key_length")) KVS_RETURN_IF_ERROR(u32("attention.key_length", c.head_dim));
  else if (f.Has(arch + ".rope.dimension_count")) KVS_RETURN_IF_ERROR(u32("rope.dimension_count", c.head_dim));
  KVS_ASSIGN_OR_RETURN(double eps, f.GetFloat(arch + ".attention.layer_norm_rms_epsilon"));
  c.rms_norm_eps = static_cast<float>(eps);
  if (f.Has(arch + ".rope.freq_base")) {
    KVS_ASSIGN_OR_RETURN(c.rope_theta, f.GetFloat(arch + ".rope.freq_base"));
  }
  if (f.Has(arch + ".rope.scaling.type")) {
    KVS_ASSIGN_OR_RETURN(std::string type, f.GetString(arch + ".rope.scaling.type"));
    if (type == "linear") {
      c.rope_scaling.type = RopeScalingType::kLinear;
      KVS_ASSIGN_OR_RETURN(c.rope_scaling.factor, f.GetFloat(arch + ".rope.scaling.factor"));
    } else if (type != "none") {
      return absl::UnimplementedError(absl::StrFormat("%s: rope scaling '%s' is not supported", f.path(), type));
    }
  }
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return absl::DataLossError(f.path() + ": tensor 'token_embd.weight' is missing or not 2-D");
  }
  c.vocab_size = static_cast<int32_t>(embd->dims[1]);
  c.tie_word_embeddings = f.FindTensor("output.weight") == nullptr;
  c.attention_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  if (f.Has("tokenizer.ggml.bos_token_id")) {
    KVS_ASSIGN_OR_RETURN(uint64_t bos, f.GetUint("tokenizer.ggml.bos_token_id"));
    c.bos_token_id = static_cast<int32_t>(bos);
  }
  if (f.Has("tokenizer.ggml.eos_token_id")) {
    KVS_ASSIGN_OR_RETURN(uint64_t eos, f.GetUint("tokenizer.ggml.eos_token_id"));
    c.eos_token_ids.push_back(static_cast<int32_t>(eos));
  }
  if (arch == "qwen3") c.qk_norm = true;
  if (arch == "gemma3") KVS_RETURN_IF_ERROR(Gemma3FromGguf(f, c));
  KVS_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WeightSource>> OpenGgufWeights(const std::string& path) {
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  KVS_ASSIGN_OR_RETURN(ModelConfig config, ConfigFromGguf(*file));
  const bool permuted = config.architecture == "llama";
  return std::unique_ptr<WeightSource>(new GgufWeightSource(std::move(file), std::move(config), permuted));
}

}  // namespace kvs
