// `kvshard bench --kernel linear`: the model's first layer's matrices and its LM head, each
// multiplied by --batch tokens of random activations through Backend::Linear, as stored in the
// model (GGML blocks kept where the backend takes them, bf16 otherwise). One row per matrix with
// its time and the weight bytes read per second, the figure to set beside the copy ceiling.
#pragma once

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "runtime/model/weight_source.h"

namespace kvs {

absl::Status BenchLinear(Backend& backend, const WeightSource& source, int32_t tokens, int32_t iters);

}  // namespace kvs
