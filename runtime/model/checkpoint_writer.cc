#include "runtime/model/checkpoint_writer.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_format.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"

namespace kvs {
namespace {

namespace fs = std::filesystem;

int64_t Elements(const TensorSpec& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return n;
}

absl::Status WriteShard(const WeightSource& src, const std::vector<const TensorSpec*>& tensors, const fs::path& path) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const TensorSpec* t : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(Elements(*t)) * 2;
    header[t->name] = {{"dtype", "BF16"}, {"shape", t->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');  // data starts 8-byte aligned
  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::PermissionDeniedError(absl::StrFormat("%s: cannot write", path.string()));
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  std::vector<float> values;
  std::vector<uint16_t> bits;
  for (const TensorSpec* t : tensors) {
    values.resize(Elements(*t));
    KVS_RETURN_IF_ERROR(src.ReadF32(t->name, t->shape, values));
    bits.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = FloatToBf16Bits(values[i]);
    out.write(reinterpret_cast<const char*>(bits.data()), static_cast<std::streamsize>(bits.size() * 2));
  }
  if (!out.flush()) return absl::DataLossError(absl::StrFormat("%s: write failed", path.string()));
  return absl::OkStatus();
}

}  // namespace

std::vector<TensorSpec> HfTensorList(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = static_cast<int64_t>(c.num_q_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim, inter = c.intermediate_size;
  std::vector<TensorSpec> t = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrFormat("model.layers.%d.", l);
    t.push_back({p + "input_layernorm.weight", {h}});
    t.push_back({p + "self_attn.q_proj.weight", {q, h}});
    t.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    t.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    if (c.attention_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {q}});
      t.push_back({p + "self_attn.k_proj.bias", {kv}});
      t.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {h, q}});
    t.push_back({p + "post_attention_layernorm.weight", {h}});
    t.push_back({p + "mlp.gate_proj.weight", {inter, h}});
    t.push_back({p + "mlp.up_proj.weight", {inter, h}});
    t.push_back({p + "mlp.down_proj.weight", {h, inter}});
  }
  t.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, h}});
  return t;
}

absl::Status WriteHfCheckpoint(const WeightSource& src, const nlohmann::json& config, const std::string& dir,
                               uint64_t max_shard_bytes) {
  const fs::path root(dir);
  std::error_code ec;
  if (fs::exists(root / "config.json", ec)) {
    return absl::AlreadyExistsError(absl::StrFormat("%s already holds a checkpoint; choose an empty directory", dir));
  }
  fs::create_directories(root, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrFormat("%s: cannot create: %s", dir, ec.message()));
  const std::vector<TensorSpec> specs = HfTensorList(src.config());
  // Group tensors into shards of at most max_shard_bytes (a tensor larger than that gets its own).
  std::vector<std::vector<const TensorSpec*>> shards(1);
  uint64_t in_shard = 0;
  for (const TensorSpec& t : specs) {
    const uint64_t bytes = static_cast<uint64_t>(Elements(t)) * 2;
    if (!shards.back().empty() && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += bytes;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? "model.safetensors"
                                                : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    KVS_RETURN_IF_ERROR(WriteShard(src, shards[i], root / name));
    for (const TensorSpec* t : shards[i]) {
      weight_map[t->name] = name;
      total += static_cast<uint64_t>(Elements(*t)) * 2;
    }
  }
  if (shards.size() > 1) {
    std::ofstream(root / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2);
  }
  nlohmann::json cfg = config;
  cfg["torch_dtype"] = "bfloat16";
  std::ofstream(root / "config.json") << cfg.dump(2);
  return absl::OkStatus();
}

}  // namespace kvs
