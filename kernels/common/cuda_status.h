// A CUDA runtime call's failure as an absl::Status naming the file, line and call: every host-side
// CUDA call in kvshard goes through it (the CUDA backend, the peer-memory collectives). Included
// only by files that build with the CUDA toolkit.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

#define KVS_CUDA_RETURN_IF_ERROR(call)                                                             \
  do {                                                                                             \
    const cudaError_t kvs_err_ = (call);                                                           \
    if (kvs_err_ != cudaSuccess) {                                                                 \
      return absl::InternalError(absl::StrFormat("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, \
                                                 cudaGetErrorString(kvs_err_)));                   \
    }                                                                                              \
  } while (0)
