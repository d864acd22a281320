// Error-handling macros for absl::Status / absl::StatusOr.
//
// Debian's Abseil (20220623) ships neither RETURN_IF_ERROR nor ASSIGN_OR_RETURN, so kvshard has
// its own. Policy (see CONVENTIONS): anything a user or a file can cause returns a Status whose
// message names the thing and the fix; a broken internal invariant aborts through KVS_CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KVS_CONCAT_INNER_(a, b) a##b
#define KVS_CONCAT_(a, b) KVS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define KVS_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    ::absl::Status kvs_status_ = (expr);          \
    if (!kvs_status_.ok()) return kvs_status_;    \
  } while (0)

// `lhs = value of expr` where expr is a StatusOr; returns its status if not OK.
#define KVS_ASSIGN_OR_RETURN(lhs, expr) \
  KVS_ASSIGN_OR_RETURN_IMPL_(KVS_CONCAT_(kvs_statusor_, __LINE__), lhs, expr)
#define KVS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()

// Aborts with file, line and the failed condition: for programming errors only.
#define KVS_CHECK(cond)                                                                 \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "kvshard: check failed at %s:%d: %s\n", __FILE__, __LINE__, \
                   #cond);                                                              \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

#define KVS_CHECK_MSG(cond, msg)                                                             \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "kvshard: check failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   #cond, std::string(msg).c_str());                                         \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
