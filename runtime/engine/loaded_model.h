// Everything kvshard opens for a model path: its weight source, tokenizer and chat template.
// A .gguf file carries all three; a HF directory has tokenizer.json and tokenizer_config.json
// (chat_template) beside config.json, each optional (token-only use without a tokenizer).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/chat_template.h"
#include "runtime/model/quantizing_weight_source.h"
#include "runtime/model/tokenizer.h"
#include "runtime/model/weight_check.h"
#include "runtime/model/weight_source.h"

namespace kvs {

struct LoadedModel {
  std::unique_ptr<WeightSource> source;
  std::optional<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
  std::string chat_template_error;  // why there is none, for a clear --chat error
};

// `check` decides the non-finite weight pass (weight_check.h); kAuto checks GGUF files whose
// tensors total up to kAutoWeightCheckBytes. `quantize` (--quantize) wraps the source so that its
// float projections load quantized (quantizing_weight_source.h).
absl::StatusOr<LoadedModel> OpenModel(const std::string& path, WeightCheck check = WeightCheck::kAuto,
                                      WeightQuantization quantize = WeightQuantization::kNone);

}  // namespace kvs
