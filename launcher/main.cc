// kvshard: serve and run Llama-family LLMs. `kvshard <command> [--flags]`.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "kernels/backend_factory.h"
#include "launcher/commands.h"
#include "launcher/flags.h"

namespace {

constexpr const char* kUsage =
    "usage: kvshard <command> [flags]\n"
    "commands:\n"
    "  serve    --model PATH [--port 8000 --host 127.0.0.1 --api-key KEY]   (OpenAI API)\n"
    "  generate --model PATH (--prompt TEXT [--chat] | --input in.jsonl --output out.jsonl)\n"
    "  inspect  --model PATH\n"
    "  bench    --model PATH|random:PRESET [--input-len N --output-len N --num-prompts N | --kernel attention]\n"
    "  make-model --preset NAME --out DIR [--seed N]\n"
    "  plan     --model PRESET|PATH --gpu-mem 80GiB [--tp N --kv-dtype fp8 --context 1M --batch N]\n"
    "  perplexity --model PATH --text FILE [--context 512 --kv-dtype int8]\n"
    "run `kvshard <command> --help` for the flags.\n";

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
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> args = {std::string("kvshard ") + command};
  for (int i = 2; i < argc; ++i) args.push_back(NormalizeFlag(argv[i]));
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
  std::fprintf(stderr, "kvshard: unknown command '%s'\n%s", command.c_str(), kUsage);
  return 2;
}
