// The kvshard subcommands. Each returns a process exit code and prints errors to stderr.
#pragma once

namespace kvs {
int RunGenerate();
int RunInspect();
int RunBench();
int RunMakeModel();
}  // namespace kvs
