// Where a model's weights come from: a GGUF file or a Hugging Face checkpoint directory.
// Tensors are addressed by their Hugging Face names ("model.layers.3.self_attn.q_proj.weight")
// and read as float32 in HF layout, whatever the file format: the GGUF source renames tensors
// and undoes llama.cpp's Q/K row permutation so the model code sees one layout.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/common/ggml_types.h"
#include "runtime/model/model_config.h"

namespace kvs {

struct TensorSummary {
  std::string name;   // name in the file
  std::string dtype;  // storage type in the file
  std::vector<int64_t> shape;  // HF order: outermost first
};

// A 2-D tensor as the file stores it, each row a run of GGML blocks: HF row r is stored row
// row_order[r], or row r when row_order is empty (llama.cpp stores Q/K rows permuted).
// `owner` holds bytes made at read time (FP8 codes packed with their scales, `--quantize fp8`):
// they live while the RawTensor (or a copy) does; file bytes need none.
struct RawTensor {
  GgmlType type;
  std::span<const uint8_t> bytes;
  std::vector<int32_t> row_order;
  std::shared_ptr<const std::vector<uint8_t>> owner;

  static RawTensor Owning(GgmlType type, std::vector<uint8_t> bytes) {
    auto owner = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    return RawTensor{type, *owner, {}, owner};
  }
};

// How a synthetic model fills one tensor: mean + half_range * UniformSigned(seed, i).
struct RandomInit {
  uint64_t seed = 0;
  float mean = 0.0f;
  float half_range = 0.0f;
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string path() const = 0;
  virtual std::string format() const = 0;  // "gguf" or "safetensors"
  virtual bool Has(const std::string& hf_name) const = 0;
  // Reads `hf_name` into `out` as float32; its shape must equal `shape` (HF order), or the
  // error names the file, the tensor, and both shapes.
  virtual absl::Status ReadF32(const std::string& hf_name, std::span<const int64_t> shape,
                               std::span<float> out) const = 0;
  // A 2-D tensor's stored bytes, when the file keeps it in a GGML type (Backend::Dequantize
  // decodes those on the device; a backend may keep them: Backend::LinearTakesBlocks); nullopt
  // means read it with ReadF32.
  // Shape and missing-tensor errors as ReadF32's.
  virtual absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string& hf_name,
                                                           std::span<const int64_t> shape) const {
    return std::nullopt;
  }
  // The GGML block type (Q4_K, ...) a 2-D tensor is stored in, or nullopt for float storage or a
  // missing tensor: what a backend keeping blocks (Backend::LinearTakesBlocks) will hold, so that
  // capacity plans count the real bytes without reading the tensor.
  virtual std::optional<GgmlType> StoredBlockType(const std::string& hf_name) const { return std::nullopt; }
  // Rotary frequency divisors stored in the file (GGUF rope_freqs for Llama 3.1), if any.
  virtual std::optional<std::vector<float>> RopeFreqFactors() const { return std::nullopt; }
  virtual std::vector<TensorSummary> Summaries() const = 0;
  // Synthetic models only: the fill for `hf_name`, so weights are built in backend memory
  // without a host copy.
  virtual std::optional<RandomInit> RandomInitFor(const std::string& hf_name) const { return std::nullopt; }
  // GGUF files carry their tokenizer; HF directories have tokenizer.json beside the weights.
  virtual class GgufFile* gguf() const { return nullptr; }
};

// A WeightSource that answers every question as `inner` does: the base of sources that change a
// few answers (quantizing_weight_source.h), so that each overrides only those and a new question
// is forwarded without each of them learning it.
class ForwardingWeightSource : public WeightSource {
 public:
  explicit ForwardingWeightSource(std::unique_ptr<WeightSource> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  std::string path() const override { return inner_->path(); }
  std::string format() const override { return inner_->format(); }
  bool Has(const std::string& hf_name) const override { return inner_->Has(hf_name); }
  absl::Status ReadF32(const std::string& hf_name, std::span<const int64_t> shape,
                       std::span<float> out) const override {
    return inner_->ReadF32(hf_name, shape, out);
  }
  absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string& hf_name,
                                                   std::span<const int64_t> shape) const override {
    return inner_->ReadRaw(hf_name, shape);
  }
  std::optional<GgmlType> StoredBlockType(const std::string& hf_name) const override {
    return inner_->StoredBlockType(hf_name);
  }
  std::optional<std::vector<float>> RopeFreqFactors() const override { return inner_->RopeFreqFactors(); }
  std::vector<TensorSummary> Summaries() const override { return inner_->Summaries(); }
  std::optional<RandomInit> RandomInitFor(const std::string& hf_name) const override {
    return inner_->RandomInitFor(hf_name);
  }
  class GgufFile* gguf() const override {
    return inner_->gguf();
  }

 protected:
  const WeightSource& inner() const { return *inner_; }

 private:
  std::unique_ptr<WeightSource> inner_;
};

// Opens `path`: a .gguf file, a directory with config.json and model.safetensors or
// model.safetensors.index.json, or "random:<preset>" (configs/models/<preset>.json, seeded
// random weights; the seed may follow as "random:<preset>:<seed>").
absl::StatusOr<std::unique_ptr<WeightSource>> OpenWeightSource(const std::string& path);

absl::StatusOr<std::unique_ptr<WeightSource>> OpenGgufWeights(const std::string& path);
absl::StatusOr<std::unique_ptr<WeightSource>> OpenHfWeights(const std::string& dir);
absl::StatusOr<std::unique_ptr<WeightSource>> OpenRandomWeights(const std::string& spec);
// Where presets live: $KVS_CONFIG_DIR/models, else the source tree's configs/models.
std::string PresetDir();

// "tensor X in F: shape [a, b] does not match the expected [c, d]".
std::string ShapeMismatch(const std::string& path, const std::string& tensor,
                          std::span<const int64_t> got, std::span<const int64_t> want);

}  // namespace kvs
