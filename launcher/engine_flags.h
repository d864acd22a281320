// The engine's configuration from the command-line flags, shared by `generate` and `bench`.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/engine/engine.h"

namespace kvs {

// Reads and validates --block-size, --max-seqs, --max-tokens-per-step, --max-model-len,
// --kv-cache-memory, --kv-dtype, --swap-space and --preemption-mode. Without --kv-cache-memory, a GPU cache
// takes what the weights leave; on the CPU backend host memory is shared with everything else,
// so the cache is a fixed 1 GiB and there is no swap space unless asked for.
absl::StatusOr<EngineConfig> EngineConfigFromFlags(const Backend& backend);
// The --device backend of rank `local_rank` of the `ranks` on its node (the CPU backend's default
// memory budget shared among them); SingleProcessBackend: of a command that runs in one process
// (bench --kernel, perplexity).
absl::StatusOr<std::unique_ptr<Backend>> RankBackend(int local_rank, int ranks);
absl::StatusOr<std::unique_ptr<Backend>> SingleProcessBackend();
// The same for a device that is not at hand (`kvshard plan`): GPU defaults when `cpu` is false.
absl::StatusOr<EngineConfig> EngineConfigFromFlags(bool cpu);
// --kv-dtype, or the backend's default format when it is not given (for commands that build a
// cache without an Engine: `bench --kernel`, `perplexity`).
absl::StatusOr<KvDType> KvDTypeFromFlags(const Backend& backend);
// A request's sampling parameters from --max-tokens, --temperature, --top-k, --top-p, --seed,
// --stop and --ignore-eos, validated.
absl::StatusOr<SamplingParams> SamplingParamsFromFlags();

}  // namespace kvs
