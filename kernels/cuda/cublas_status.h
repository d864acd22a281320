// KVS_CUBLAS_RETURN_IF_ERROR, as KVS_CUDA_RETURN_IF_ERROR (kernels/common/cuda_status.h) for CUDA calls.
#pragma once

#include <cublas_v2.h>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

// Every cuBLAS call goes through this (CUDA calls through KVS_CUDA_RETURN_IF_ERROR): file, line and
// the call in the message.
#define KVS_CUBLAS_RETURN_IF_ERROR(call)                                                                       \
  do {                                                                                                         \
    const cublasStatus_t kvs_st_ = (call);                                                                     \
    if (kvs_st_ != CUBLAS_STATUS_SUCCESS) {                                                                    \
      return absl::InternalError(                                                                              \
          absl::StrFormat("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, cublasGetStatusString(kvs_st_))); \
    }                                                                                                          \
  } while (0)
