// kvshard: serve and run Llama-family LLMs. `kvshard <command> [--flags]`.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "kernels/backend_factory.h"
#include "launcher/command_flags.h"
#include "launcher/commands.h"
#include "launcher/flags.h"

namespace {

// The top-level usage: every command's line (launcher/command_flags.cc, the one place for them).
std::string Usage() {
  std::string u = "usage: kvshard <command> [flags]\ncommands:\n";
  for (const kvs::CommandFlags& c : kvs::AllCommandFlags()) {
    u += "  " + std::string(c.name) + std::string(c.name.size() < 8 ? 9 - c.name.size() : 1, ' ') +
         std::string(c.usage) + "\n";
  }
  return u + "run `kvshard <command> --help` for the flags.\n";
}

// Abseil flag names are identifiers; accept --max-tokens as --max_tokens.
std::string NormalizeFlag(const char* arg) {
  std::string s(arg);
  if (s.rfind("--", 0) != 0) return s;
  const size_t end = s.find('=');
  for (size_t i = 2; i < std::min(end, s.size()); ++i) {
    if (s[i] == '-') s[i] = '_';
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage = Usage();
  absl::SetProgramUsageMessage(usage);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::fputs(usage.c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  const kvs::CommandFlags* spec = kvs::FindCommandFlags(command);
#if !defined(KVS_HAVE_SERVER)
  if (command == "serve") spec = nullptr;
#endif
  if (spec == nullptr) {
    std::fprintf(stderr, "kvshard: unknown command '%s'\n%s", command.c_str(), usage.c_str());
    return 2;
  }
  if (const std::vector<std::string> missing = kvs::UndefinedListedFlags(); !missing.empty()) {
    std::fprintf(stderr, "kvshard: internal error: a command lists a flag the binary lacks (%s)\n", missing[0].c_str());
    return 70;
  }
  std::vector<std::string> args = {std::string("kvshard ") + command};
  for (int i = 2; i < argc; ++i) args.push_back(NormalizeFlag(argv[i]));
  // This command's flags only: any other would be parsed and then ignored.
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::fputs(kvs::CommandHelp(*spec).c_str(), stdout);
      return 0;
    }
  }
  if (const std::string refusal = kvs::RefuseForeignFlags(*spec, args); !refusal.empty()) {
    std::fprintf(stderr, "kvshard %s: %s\n", command.c_str(), refusal.c_str());
    return 2;
  }
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  const std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
  if (positional.size() > 1) {
    std::fprintf(stderr, "kvshard %s: unexpected argument '%s'\n", command.c_str(), positional[1]);
    return 2;
  }
  if (const int32_t threads = absl::GetFlag(FLAGS_threads); threads < 0 || threads > 4096) {
    std::fprintf(stderr, "kvshard %s: --threads %d is not between 0 (the default) and 4096\n", command.c_str(), threads);
    return 2;
  } else {
    kvs::SetCpuBackendThreads(threads);
  }
  if (command == "generate") return kvs::RunGenerate();
  if (command == "inspect") return kvs::RunInspect();
  if (command == "bench") return kvs::RunBench();
  if (command == "make-model") return kvs::RunMakeModel();
  if (command == "plan") return kvs::RunPlan();
  if (command == "perplexity") return kvs::RunPerplexity();
#if defined(KVS_HAVE_SERVER)
  if (command == "serve") return kvs::RunServe();
#endif
  std::fprintf(stderr, "kvshard: unknown command '%s'\n%s", command.c_str(), usage.c_str());
  return 2;
}
