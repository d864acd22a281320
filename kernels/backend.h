// The Backend interface: device memory, copies and the ops a Llama-family forward pass needs,
// in three parts a change touches one of (as ggml splits buffers, backends and ops):
//   BackendMemory (kernels/backend_memory.h): allocation — device, page-locked host, host-tail;
//   BackendQueue  (kernels/backend_queue.h): stream-ordered copies, KV block moves, sync, graphs;
//   BackendOps    (kernels/backend_ops.h): the op set and the formats it takes.
//
// Two implementations: kernels/cpu (float32 reference, the oracle) and kernels/cuda. Calls are
// stream-ordered: an op may return before its work is done; CopyToHost/Synchronize wait.
#pragma once

#include "kernels/backend_memory.h"
#include "kernels/backend_ops.h"
#include "kernels/backend_queue.h"

namespace kvs {

class Backend : public BackendMemory, public BackendQueue, public BackendOps {
 public:
  ~Backend() override = default;
};

}  // namespace kvs
