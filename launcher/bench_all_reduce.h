// `mpirun -np N kvshard bench --kernel all-reduce --device cuda`: NCCL's all-reduce and kvshard's
// peer-memory one (parallel/peer_all_reduce.h) timed side by side on bf16 messages of 1 KiB to
// 64 MiB over all the job's ranks; rank 0 prints a row per size. Ranks sharing a GPU time the
// peer path only (NCCL refuses them).
#pragma once

#include "absl/status/status.h"

namespace kvs {

absl::Status BenchAllReduce(int iters);

}  // namespace kvs
