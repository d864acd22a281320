// WeightSource over a Hugging Face checkpoint directory: config.json plus model.safetensors or
// a sharded model.safetensors.index.json.
#include <filesystem>
#include <fstream>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/common/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model/fp8_checkpoint.h"
#include "runtime/model/safetensors_file.h"
#include "runtime/model/weight_source.h"

namespace kvs {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<nlohmann::json> ReadJsonFile(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s: cannot open", p.string()));
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrFormat("%s: not valid JSON", p.string()));
  return j;
}

class HfWeightSource final : public WeightSource {
 public:
  std::string path() const override { return dir_; }
  std::string format() const override { return "safetensors"; }
  const ModelConfig& config() const override { return config_; }

  bool Has(const std::string& name) const override { return Locate(name).first != nullptr; }

  absl::Status ReadF32(const std::string& name, std::span<const int64_t> shape,
                       std::span<float> out) const override {
    auto [t, file] = Locate(name);
    if (t == nullptr) return absl::NotFoundError(absl::StrFormat("%s: tensor '%s' is missing", dir_, name));
    // A 1-D bias/norm may be stored as [n] while callers ask for [n]; compare exactly.
    if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
      return absl::InvalidArgumentError(ShapeMismatch(file->path(), name, t->shape, shape));
    }
    KVS_RETURN_IF_ERROR(SafetensorsToF32(*t, file->path(), out));
    if (config_.architecture == "gemma3" && absl::EndsWith(name, "norm.weight")) {
      // Gemma's RMSNorm multiplies by (1 + weight): the one norm kernel gets 1 + weight (float32,
      // as transformers computes it). llama.cpp's GGUF converter stores it so already.
      for (float& x : out) x += 1.0f;
      return absl::OkStatus();
    }
    if (t->dtype != SafetensorsDType::kF8E4M3) return absl::OkStatus();
    // FP8 codes: times the scale stored beside them (fp8_checkpoint.h).
    const int64_t rows = shape.empty() ? 1 : shape[0];
    const int64_t cols = static_cast<int64_t>(out.size()) / std::max<int64_t>(rows, 1);
    KVS_ASSIGN_OR_RETURN(Fp8Scales s, ReadFp8Scales(name, file->path(), rows, cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) out[r * cols + c] *= s.values[s.grid.At(r, c)];
    return absl::OkStatus();
  }

  // An FP8 matrix stays in 8 bits: its codes and scales as F8_E4M3 blocks, where its layout has
  // that form.
  absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string& name,
                                                   std::span<const int64_t> shape) const override {
    auto [t, file] = Locate(name);
    if (t == nullptr || t->dtype != SafetensorsDType::kF8E4M3 || shape.size() != 2) return std::nullopt;
    if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
      return absl::InvalidArgumentError(ShapeMismatch(file->path(), name, t->shape, shape));
    }
    KVS_ASSIGN_OR_RETURN(Fp8Scales s, ReadFp8Scales(name, file->path(), shape[0], shape[1]));
    std::optional<std::vector<uint8_t>> blocks = PackFp8Blocks(t->bytes, shape[0], shape[1], s.values, s.grid);
    if (!blocks) return std::nullopt;
    return RawTensor::Owning(GgmlType::kF8_E4M3, std::move(*blocks));
  }

  std::optional<GgmlType> StoredBlockType(const std::string& name) const override {
    auto [t, file] = Locate(name);
    if (t == nullptr || t->dtype != SafetensorsDType::kF8E4M3 || t->shape.size() != 2) return std::nullopt;
    auto scale = LocateFp8Scale(name, file->path(), t->shape[0], t->shape[1]);  // its shape: no values read
    if (!scale.ok() || !Fp8GridFitsBlocks(scale->grid, t->shape[1])) return std::nullopt;
    return GgmlType::kF8_E4M3;
  }

  std::vector<TensorSummary> Summaries() const override {
    std::vector<TensorSummary> s;
    for (const auto& f : files_) {
      for (const auto& t : f->tensors()) s.push_back({t.name, t.dtype_name, t.shape});
    }
    return s;
  }

  static absl::StatusOr<std::unique_ptr<WeightSource>> Open(const std::string& dir) {
    std::unique_ptr<HfWeightSource> src(new HfWeightSource());
    src->dir_ = dir;
    const fs::path root(dir);
    KVS_ASSIGN_OR_RETURN(nlohmann::json cfg, ReadJsonFile(root / "config.json"));
    KVS_ASSIGN_OR_RETURN(src->config_, ParseHfConfig(cfg, (root / "config.json").string()));
    KVS_ASSIGN_OR_RETURN(src->fp8_, ParseFp8Scheme(cfg, (root / "config.json").string()));
    src->config_.name = root.filename().string();
    if (src->config_.name.empty()) src->config_.name = root.parent_path().filename().string();

    const fs::path single = root / "model.safetensors";
    const fs::path index = root / "model.safetensors.index.json";
    if (fs::exists(index)) {
      KVS_ASSIGN_OR_RETURN(nlohmann::json idx, ReadJsonFile(index));
      auto wm = idx.find("weight_map");
      if (wm == idx.end() || !wm->is_object()) {
        return absl::InvalidArgumentError(index.string() + ": missing object 'weight_map'");
      }
      absl::flat_hash_map<std::string, size_t> file_ids;
      for (const auto& [name, shard] : wm->items()) {
        if (!shard.is_string()) return absl::InvalidArgumentError(index.string() + ": weight_map values must be file names");
        const std::string shard_name = shard.get<std::string>();
        if (shard_name.find('/') != std::string::npos || shard_name.starts_with(".")) {
          return absl::InvalidArgumentError(absl::StrFormat("%s: shard name '%s' must be a plain file name", index.string(), shard_name));
        }
        auto [it, inserted] = file_ids.emplace(shard_name, src->files_.size());
        if (inserted) {
          KVS_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open((root / shard_name).string()));
          src->files_.push_back(std::move(f));
        }
        if (src->files_[it->second]->Find(name) == nullptr) {
          return absl::DataLossError(absl::StrFormat("%s: index says tensor '%s' is in %s, but it is not",
                                                     index.string(), name, shard_name));
        }
        src->where_[name] = it->second;
      }
    } else if (fs::exists(single)) {
      KVS_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single.string()));
      for (const auto& t : f->tensors()) src->where_[t.name] = 0;
      src->files_.push_back(std::move(f));
    } else {
      return absl::NotFoundError(absl::StrFormat(
          "%s: no model.safetensors or model.safetensors.index.json in the checkpoint directory", dir));
    }
    return std::unique_ptr<WeightSource>(std::move(src));
  }

 private:
  struct Fp8Scales {
    std::vector<float> values;
    Fp8ScaleGrid grid;
  };
  // The scales of FP8 tensor `name` ([rows, cols]): `<name>_scale`, or `<name>_scale_inv` (the
  // transformers layout), with the grid its shape says; refused by name when missing or misshapen.
  absl::StatusOr<Fp8Scales> ReadFp8Scales(const std::string& name, const std::string& path, int64_t rows,
                                          int64_t cols) const {
    KVS_ASSIGN_OR_RETURN(Fp8ScaleTensor scale, LocateFp8Scale(name, path, rows, cols));
    Fp8Scales s;
    s.grid = scale.grid;
    int64_t scale_elems = 1;
    for (int64_t d : scale.tensor->shape) scale_elems *= d;
    s.values.resize(scale_elems);
    KVS_RETURN_IF_ERROR(SafetensorsToF32(*scale.tensor, scale.file->path(), s.values));
    return s;
  }
  // ReadFp8Scales' tensor and grid, its values unread.
  struct Fp8ScaleTensor {
    const SafetensorsTensor* tensor;
    const SafetensorsFile* file;
    Fp8ScaleGrid grid;
  };
  absl::StatusOr<Fp8ScaleTensor> LocateFp8Scale(const std::string& name, const std::string& path, int64_t rows,
                                                int64_t cols) const {
    const std::string what = absl::StrFormat("%s: tensor '%s' (F8_E4M3)", path, name);
    auto [scale, scale_file] = Locate(name + "_scale");
    if (scale == nullptr) std::tie(scale, scale_file) = Locate(name + "_scale_inv");
    if (scale == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s has no scale: neither '%s_scale' nor '%s_scale_inv' is in "
                          "the checkpoint",
                          what, name, name));
    }
    KVS_ASSIGN_OR_RETURN(Fp8ScaleGrid grid,
                         ResolveFp8Scale(rows, cols, scale->shape, fp8_.value_or(Fp8Scheme{}), what));
    return Fp8ScaleTensor{scale, scale_file, grid};
  }

  std::pair<const SafetensorsTensor*, const SafetensorsFile*> Locate(const std::string& name) const {
    auto it = where_.find(name);
    if (it == where_.end()) return {nullptr, nullptr};
    const SafetensorsFile* f = files_[it->second].get();
    return {f->Find(name), f};
  }

  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, size_t> where_;
  std::optional<Fp8Scheme> fp8_;  // the checkpoint's quantization_config, if any
};

}  // namespace

std::string ShapeMismatch(const std::string& path, const std::string& tensor,
                          std::span<const int64_t> got, std::span<const int64_t> want) {
  return absl::StrFormat("%s: tensor '%s' has shape [%s], expected [%s]", path, tensor,
                         absl::StrJoin(got, ", "), absl::StrJoin(want, ", "));
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenHfWeights(const std::string& dir) {
  return HfWeightSource::Open(dir);
}

absl::StatusOr<std::unique_ptr<WeightSource>> OpenWeightSource(const std::string& path) {
  if (path.rfind("random:", 0) == 0) return OpenRandomWeights(path);
  std::error_code ec;
  if (fs::is_directory(path, ec)) return OpenHfWeights(path);
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrFormat("model '%s' does not exist (give a .gguf file or a HF checkpoint directory)", path));
  }
  return OpenGgufWeights(path);
}

}  // namespace kvs
