// The kvshard subcommands. Each returns a process exit code and prints errors to stderr.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"

namespace kvs {

// Prints a failed command's error and maps it to an exit code (2: bad usage/input, 1: other).
inline int ReportAndExit(const char* command, const absl::Status& s) {
  if (s.ok()) return 0;
  std::fprintf(stderr, "kvshard %s: %s\n", command, std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int RunGenerate();
int RunInspect();
int RunBench();
int RunMakeModel();
int RunPlan();
int RunPerplexity();
int RunServe();
}  // namespace kvs
