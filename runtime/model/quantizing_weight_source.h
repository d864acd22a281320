// `--quantize fp8`: a WeightSource over another whose projection matrices (q/k/v/o, gate/up/down)
// read as kvshard's F8_E4M3 blocks (kernels/common/ggml_types.h), quantized at load from the float
// weights the inner source gives — vLLM's `--quantization fp8` for a bf16 checkpoint. The
// embedding and LM head stay as stored (as in vLLM and FP8 checkpoints), and so do matrices the
// file already keeps in blocks (a GGUF Q4_K stays Q4_K) and rows that are not whole 128-column
// blocks.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/model/weight_source.h"

namespace kvs {

// What `--quantize` asks of a model's weights at load.
enum class WeightQuantization { kNone, kFp8 };
absl::StatusOr<WeightQuantization> ParseWeightQuantization(const std::string& name);

std::unique_ptr<WeightSource> QuantizeToFp8(std::unique_ptr<WeightSource> inner);

// A projection matrix's columns (its fan-in), from the config: the hidden size, the query width
// for o_proj, the FFN width for down_proj.
int64_t ProjectionColumns(const ModelConfig& c, const std::string& hf_name);

}  // namespace kvs
