// `kvshard bench --kernel kv-moves`: what running KV block moves beside the forward pass buys.
// One decode step of --batch sequences at --context tokens through ModelRunner, timed on its
// own; with --move-blocks blocks swapped out and as many swapped in, the moves overlapped (as the
// engine runs them) and queued first (as --overlap-kv-moves=false runs them); and the moves on
// their own, in the fewest batches. The share of the moves' time that overlap hides is
// (queued - overlapped) / moves.
#pragma once

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "runtime/model/weight_source.h"

namespace kvs {

absl::Status BenchKvMoves(Backend& backend, const WeightSource& source);

}  // namespace kvs
