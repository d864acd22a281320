// Command-line flags of the kvshard CLI (Abseil flags). Users write --max-tokens; the launcher
// turns '-' into '_' in flag names before Abseil parses them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "runtime/model/quantizing_weight_source.h"
#include "runtime/model/weight_check.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, check_weights);
ABSL_DECLARE_FLAG(std::string, quantize);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(bool, chat);
ABSL_DECLARE_FLAG(std::string, system);
ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(bool, resume);
ABSL_DECLARE_FLAG(bool, strict);
ABSL_DECLARE_FLAG(int32_t, max_tokens);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(double, top_p);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(std::vector<std::string>, stop);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_DECLARE_FLAG(int32_t, block_size);
ABSL_DECLARE_FLAG(int32_t, max_seqs);
ABSL_DECLARE_FLAG(int32_t, max_tokens_per_step);
ABSL_DECLARE_FLAG(int32_t, max_model_len);
ABSL_DECLARE_FLAG(std::string, kv_cache_memory);
ABSL_DECLARE_FLAG(std::string, kv_dtype);
ABSL_DECLARE_FLAG(int32_t, kv_residual_tokens);
ABSL_DECLARE_FLAG(bool, kv_sink);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(bool, verbose);
ABSL_DECLARE_FLAG(double, memory_fraction);
ABSL_DECLARE_FLAG(std::string, context);
ABSL_DECLARE_FLAG(int32_t, tp);
ABSL_DECLARE_FLAG(bool, enable_prefix_caching);
ABSL_DECLARE_FLAG(bool, enforce_eager);
ABSL_DECLARE_FLAG(bool, overlap_kv_moves);
ABSL_DECLARE_FLAG(std::string, swap_space);
ABSL_DECLARE_FLAG(std::string, kv_offload_memory);
ABSL_DECLARE_FLAG(std::string, preemption_mode);
ABSL_DECLARE_FLAG(double, comm_timeout);
ABSL_DECLARE_FLAG(std::string, all_reduce);
ABSL_DECLARE_FLAG(std::string, dp_routing);

namespace kvs {
// --check-weights as the loader's policy (an error names the valid values).
absl::StatusOr<WeightCheck> WeightCheckFlag();
// --quantize as the loader's policy (quantizing_weight_source.h).
absl::StatusOr<WeightQuantization> QuantizeFlag();
}  // namespace kvs
