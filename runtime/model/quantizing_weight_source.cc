#include "runtime/model/quantizing_weight_source.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "runtime/model/fp8_checkpoint.h"

namespace kvs {
namespace {

class Fp8QuantizingSource final : public ForwardingWeightSource {
 public:
  using ForwardingWeightSource::ForwardingWeightSource;

  std::optional<RandomInit> RandomInitFor(const std::string& name) const override {
    if (Quantizes(name)) return std::nullopt;  // through ReadRaw: quantized on the host
    return inner().RandomInitFor(name);
  }

  absl::StatusOr<std::optional<RawTensor>> ReadRaw(const std::string& name,
                                                   std::span<const int64_t> shape) const override {
    KVS_ASSIGN_OR_RETURN(std::optional<RawTensor> raw, inner().ReadRaw(name, shape));
    if (raw || !Quantizes(name) || shape.size() != 2) return raw;
    std::vector<float> w(shape[0] * shape[1]);
    KVS_RETURN_IF_ERROR(inner().ReadF32(name, shape, w));
    return RawTensor::Owning(GgmlType::kF8_E4M3, QuantizeToFp8Blocks(w, shape[0], shape[1]));
  }

  std::optional<GgmlType> StoredBlockType(const std::string& name) const override {
    if (auto stored = inner().StoredBlockType(name)) return stored;
    return Quantizes(name) ? std::optional<GgmlType>(GgmlType::kF8_E4M3) : std::nullopt;
  }

 private:
  // A projection the file stores as floats, of whole 128-column blocks.
  bool Quantizes(const std::string& name) const {
    return absl::EndsWith(name, "_proj.weight") && inner().Has(name) && !inner().StoredBlockType(name) &&
           ProjectionColumns(config(), name) % kF8BlockElems == 0;
  }
};

}  // namespace

absl::StatusOr<WeightQuantization> ParseWeightQuantization(const std::string& name) {
  if (name == "none" || name.empty()) return WeightQuantization::kNone;
  if (name == "fp8") return WeightQuantization::kFp8;
  return absl::InvalidArgumentError(absl::StrFormat(
      "--quantize %s is not one of none, fp8 (weights of 8 bits, E4M3, a scale per 128 columns; quantized at load)",
      name));
}

std::unique_ptr<WeightSource> QuantizeToFp8(std::unique_ptr<WeightSource> inner) {
  return std::make_unique<Fp8QuantizingSource>(std::move(inner));
}

int64_t ProjectionColumns(const ModelConfig& c, const std::string& hf_name) {
  if (hf_name.find("o_proj") != std::string::npos) return static_cast<int64_t>(c.num_q_heads) * c.head_dim;
  if (hf_name.find("down_proj") != std::string::npos) return c.intermediate_size;
  return c.hidden_size;
}

}  // namespace kvs
