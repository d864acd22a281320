// One way to check an MPI call: a failure becomes an absl::Status naming the call, the file,
// the line and MPI's own error text.
#pragma once

#include <mpi.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace kvs {

inline absl::Status MpiError(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return absl::InternalError(absl::StrFormat("%s:%d: %s failed: %s", file, line, call, std::string(text, len)));
}

}  // namespace kvs

#define KVS_MPI_RETURN_IF_ERROR(call)                                           \
  do {                                                                          \
    const int kvs_mpi_rc_ = (call);                                             \
    if (kvs_mpi_rc_ != MPI_SUCCESS) return ::kvs::MpiError(kvs_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
