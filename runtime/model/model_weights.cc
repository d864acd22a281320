#include "runtime/model/model_weights.h"

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

// Reads named tensors into consecutive rows of one host staging buffer, then uploads it.
class Stager {
 public:
  Stager(const WeightSource& src, Backend& backend, DType dtype, size_t& bytes)
      : src_(src), backend_(backend), dtype_(dtype), bytes_(bytes) {}

  // Appends tensor `name` of HF shape [rows, cols] (cols == 0 for a vector).
  absl::Status Add(const std::string& name, int64_t rows, int64_t cols) {
    const int64_t n = rows * (cols == 0 ? 1 : cols);
    if (auto init = src_.RandomInitFor(name)) {  // synthetic: filled in backend memory at Upload
      random_.push_back({staged_, n, *init});
      staged_ += n;
      return absl::OkStatus();
    }
    staged_ += n;
    const size_t at = host_.size();
    host_.resize(at + n);
    std::vector<int64_t> shape = cols == 0 ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, cols};
    return src_.ReadF32(name, shape, std::span<float>(host_.data() + at, n));
  }

  absl::StatusOr<DeviceBuffer> Upload(int64_t rows, int64_t cols) {
    KVS_CHECK(staged_ == rows * cols);
    KVS_ASSIGN_OR_RETURN(DeviceBuffer buf, backend_.Allocate(staged_ * DTypeSize(dtype_)));
    const TensorView all = buf.View(dtype_, 1, staged_);
    if (random_.empty()) {
      KVS_RETURN_IF_ERROR(backend_.UploadFloat(host_, all));
    } else {
      for (const Pending& p : random_) {
        KVS_RETURN_IF_ERROR(backend_.FillRandom(all.Cols(p.offset, p.count), p.init.seed, p.init.mean, p.init.half_range));
      }
    }
    bytes_ += buf.bytes();
    host_.clear();
    random_.clear();
    staged_ = 0;
    return buf;
  }

 private:
  const WeightSource& src_;
  Backend& backend_;
  DType dtype_;
  size_t& bytes_;
  struct Pending {
    int64_t offset, count;
    RandomInit init;
  };
  std::vector<float> host_;
  std::vector<Pending> random_;
  int64_t staged_ = 0;
};

}  // namespace

absl::StatusOr<ModelWeights> ModelWeights::Load(const WeightSource& src, Backend& backend) {
  ModelWeights w;
  w.config_ = src.config();
  w.dtype_ = backend.ComputeDType();
  const ModelConfig& c = w.config_;
  const int64_t h = c.hidden_size;
  const int64_t q = static_cast<int64_t>(c.num_q_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const int64_t inter = c.intermediate_size;
  Stager st(src, backend, w.dtype_, w.bytes_);

  KVS_RETURN_IF_ERROR(st.Add("model.embed_tokens.weight", c.vocab_size, h));
  KVS_ASSIGN_OR_RETURN(w.embed_, st.Upload(c.vocab_size, h));
  KVS_RETURN_IF_ERROR(st.Add("model.norm.weight", h, 0));
  KVS_ASSIGN_OR_RETURN(w.final_norm_, st.Upload(1, h));
  if (!c.tie_word_embeddings) {
    if (!src.Has("lm_head.weight")) {
      return absl::NotFoundError(absl::StrFormat(
          "%s: lm_head.weight is missing and tie_word_embeddings is false", src.path()));
    }
    KVS_RETURN_IF_ERROR(st.Add("lm_head.weight", c.vocab_size, h));
    KVS_ASSIGN_OR_RETURN(w.lm_head_, st.Upload(c.vocab_size, h));
  }
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrFormat("model.layers.%d.", l);
    LayerWeights lw;
    KVS_RETURN_IF_ERROR(st.Add(p + "input_layernorm.weight", h, 0));
    KVS_ASSIGN_OR_RETURN(lw.attn_norm, st.Upload(1, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.q_proj.weight", q, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.k_proj.weight", kv, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.v_proj.weight", kv, h));
    KVS_ASSIGN_OR_RETURN(lw.qkv, st.Upload(q + 2 * kv, h));
    if (c.attention_bias) {
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.q_proj.bias", q, 0));
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.k_proj.bias", kv, 0));
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.v_proj.bias", kv, 0));
      KVS_ASSIGN_OR_RETURN(lw.qkv_bias, st.Upload(1, q + 2 * kv));
    }
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.o_proj.weight", h, q));
    KVS_ASSIGN_OR_RETURN(lw.o, st.Upload(h, q));
    KVS_RETURN_IF_ERROR(st.Add(p + "post_attention_layernorm.weight", h, 0));
    KVS_ASSIGN_OR_RETURN(lw.ffn_norm, st.Upload(1, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "mlp.gate_proj.weight", inter, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "mlp.up_proj.weight", inter, h));
    KVS_ASSIGN_OR_RETURN(lw.gate_up, st.Upload(2 * inter, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "mlp.down_proj.weight", h, inter));
    KVS_ASSIGN_OR_RETURN(lw.down, st.Upload(h, inter));
    w.layers_.push_back(std::move(lw));
  }

  const auto factors = src.RopeFreqFactors();
  const std::vector<float> inv_freq = ComputeRopeInvFreq(c, factors ? &*factors : nullptr);
  KVS_ASSIGN_OR_RETURN(w.rope_inv_freq_, backend.Allocate(inv_freq.size() * sizeof(float)));
  // The rope table stays f32 on every backend.
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(inv_freq.data(), w.rope_inv_freq_.data(), inv_freq.size() * sizeof(float)));
  return w;
}

TensorView ModelWeights::embed() const { return embed_.View(dtype_, config_.vocab_size, config_.hidden_size); }
TensorView ModelWeights::final_norm() const { return final_norm_.View(dtype_, 1, config_.hidden_size); }
TensorView ModelWeights::lm_head() const {
  return config_.tie_word_embeddings ? embed() : lm_head_.View(dtype_, config_.vocab_size, config_.hidden_size);
}

}  // namespace kvs
