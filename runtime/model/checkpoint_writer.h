// Writes a Hugging Face checkpoint (config.json + safetensors shards + index) from any
// WeightSource — `kvshard make-model` uses it to turn a preset's seeded random weights into
// files that transformers and kvshard's own loader read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json_fwd.hpp"
#include "runtime/model/weight_source.h"

namespace kvs {

struct TensorSpec {
  std::string name;            // HF name
  std::vector<int64_t> shape;  // HF order
};

// The tensors a Llama-family checkpoint of this config holds, in HF order and naming.
std::vector<TensorSpec> HfTensorList(const ModelConfig& c);

// Writes `config` (config.json contents) and every tensor of `src` as bf16, in shards of at most
// `max_shard_bytes`, into `dir` (created; existing files are not overwritten).
absl::Status WriteHfCheckpoint(const WeightSource& src, const nlohmann::json& config, const std::string& dir,
                               uint64_t max_shard_bytes);

}  // namespace kvs
