#include "launcher/command_flags.h"

#include <algorithm>
#include <initializer_list>
#include <span>

#include "absl/flags/reflection.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvs {
namespace {

using Names = std::span<const std::string_view>;
// Read wherever a model is loaded onto a backend (rank_setup.cc, engine_flags.cc, main.cc).
constexpr std::string_view kLoad[] = {"model", "check_weights", "quantize", "device", "threads", "verbose"};
// EngineConfigFromFlags.
constexpr std::string_view kEngine[] = {"block_size",
                                        "max_seqs",
                                        "max_tokens_per_step",
                                        "max_model_len",
                                        "kv_cache_memory",
                                        "kv_dtype",
                                        "memory_fraction",
                                        "swap_space",
                                        "kv_offload_memory",
                                        "preemption_mode",
                                        "enable_prefix_caching",
                                        "enforce_eager",
                                        "overlap_kv_moves",
                                        "kv_residual_tokens",
                                        "kv_sink"};
// StartRank's tensor-parallel group.
constexpr std::string_view kParallel[] = {"tp", "all_reduce", "dp_routing", "comm_timeout"};
// SamplingParamsFromFlags.
constexpr std::string_view kSampling[] = {"max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "ignore_eos"};
// Abseil's own.
constexpr std::string_view kAbseil[] = {"flagfile", "fromenv", "tryfromenv", "undefok", "help", "helpfull", "helpshort",
                           "helppackage", "version", "only_check_args"};

CommandFlags Make(std::string_view name, std::string_view usage, std::initializer_list<Names> groups) {
  CommandFlags c{name, usage, {}};
  for (Names g : groups) {
    for (std::string_view f : g) {
      if (std::find(c.flags.begin(), c.flags.end(), f) == c.flags.end()) c.flags.push_back(f);
    }
  }
  return c;
}

// Debian's Abseil has its own string_view type.
const absl::CommandLineFlag* Find(std::string_view name) {
  return absl::FindCommandLineFlag(absl::string_view(name.data(), name.size()));
}

std::string Dashed(std::string_view flag) {
  std::string s(flag);
  std::replace(s.begin(), s.end(), '_', '-');
  return "--" + s;
}

}  // namespace

const std::vector<CommandFlags>& AllCommandFlags() {
  // Each command's own flags, beside the groups above.
  static constexpr std::string_view kServe[] = {"max_tokens", "port", "host", "api_key", "served_model_name",
                                                "max_in_flight", "max_body_bytes", "drain_timeout"};
  static constexpr std::string_view kGenerate[] = {"prompt", "chat", "system", "input", "output", "resume", "strict"};
  static constexpr std::string_view kInspect[] = {"model", "check_weights", "quantize", "verbose"};
  static constexpr std::string_view kBench[] = {
      "batch", "context",        "dataset",    "input_len", "output_len",     "num_prompts",     "length_scale",
      "iters", "profile_decode", "kernel",     "query_len", "shuffle_blocks", "static_batching", "move_blocks",
      "url",   "rate",           "result_json"};
  static constexpr std::string_view kMakeModel[] = {"preset", "out", "seed", "verbose"};
  static constexpr std::string_view kPlan[] = {"model", "check_weights", "quantize", "verbose",
                                               "tp",    "gpu_mem",       "context",  "batch"};
  static constexpr std::string_view kPerplexity[] = {"text",
                                                     "context",
                                                     "kv_dtype",
                                                     "kv_residual_tokens",
                                                     "kv_sink",
                                                     "block_size",
                                                     "max_tokens_per_step",
                                                     "llama_cpp_windows"};
  static const std::vector<CommandFlags> all = {
      Make("serve", "--model PATH [--port 8000 --host 127.0.0.1 --api-key KEY]   (OpenAI API)",
           {kLoad, kEngine, kParallel, kServe}),
      Make("generate", "--model PATH (--prompt TEXT [--chat] | --input in.jsonl --output out.jsonl)",
           {kLoad, kEngine, kParallel, kSampling, kGenerate}),
      Make("inspect", "--model PATH", {kInspect}),
      Make("bench", "--model PATH|random:PRESET [--input-len N --output-len N --num-prompts N | --kernel attention]",
           {kLoad, kEngine, kParallel, kSampling, kBench}),
      Make("make-model", "--preset NAME --out DIR [--seed N]", {kMakeModel}),
      Make("plan", "--model PRESET|PATH --gpu-mem 80GiB [--tp N --kv-dtype fp8 --context 1M --batch N]",
           {kPlan, kEngine}),
      Make("perplexity", "--model PATH --text FILE [--context 512 --kv-dtype int8]", {kLoad, kPerplexity}),
  };
  return all;
}

const CommandFlags* FindCommandFlags(std::string_view command) {
  for (const CommandFlags& c : AllCommandFlags()) {
    if (c.name == command) return &c;
  }
  return nullptr;
}

std::string RefuseForeignFlags(const CommandFlags& command, const std::vector<std::string>& args) {
  auto reads = [&](std::string_view name) {
    return std::find(command.flags.begin(), command.flags.end(), name) != command.flags.end() ||
           std::find(std::begin(kAbseil), std::end(kAbseil), name) != std::end(kAbseil);
  };
  for (const std::string& arg : args) {
    if (arg.rfind("--", 0) != 0 || arg == "--") continue;
    const std::string name = arg.substr(2, arg.find('=') == std::string::npos ? std::string::npos : arg.find('=') - 2);
    if (reads(name)) continue;
    // --nochat: a boolean flag's negation.
    if (name.rfind("no", 0) == 0 && reads(name.substr(2))) {
      if (const absl::CommandLineFlag* f = Find(name.substr(2)); f && f->IsOfType<bool>()) continue;
    }
    if (Find(name) == nullptr) continue;  // Abseil names unknown flags itself
    std::vector<std::string> own;
    for (std::string_view f : command.flags) own.push_back(Dashed(f));
    return absl::StrFormat("%s is not a flag of `kvshard %s`, which would ignore it (its flags: %s)", Dashed(name),
                           command.name, absl::StrJoin(own, " "));
  }
  return "";
}

std::string CommandHelp(const CommandFlags& command) {
  std::string out = absl::StrFormat("usage: kvshard %s %s\nflags:\n", command.name, command.usage);
  for (std::string_view name : command.flags) {
    const absl::CommandLineFlag* f = Find(name);
    if (f == nullptr) continue;  // a flag of an optional part this build lacks (the server's)
    absl::StrAppendFormat(&out, "  %s  %s (default: %s)\n", Dashed(name), f->Help(),
                          f->DefaultValue().empty() ? "\"\"" : f->DefaultValue());
  }
  return out;
}

std::vector<std::string> UndefinedListedFlags() {
  // Defined in serve_command.cc and serve_bench.cc, built only with the HTTP server.
  constexpr std::string_view kServerOnly[] = {"port", "host", "api_key", "served_model_name", "max_in_flight", "max_body_bytes",
                                 "drain_timeout", "url", "rate", "result_json"};
#if defined(KVS_HAVE_SERVER)
  constexpr bool server = true;
#else
  constexpr bool server = false;
#endif
  std::vector<std::string> missing;
  for (const CommandFlags& c : AllCommandFlags()) {
    for (std::string_view f : c.flags) {
      if (!server && std::find(std::begin(kServerOnly), std::end(kServerOnly), f) != std::end(kServerOnly)) continue;
      if (Find(f) == nullptr) missing.push_back(absl::StrFormat("%s: %s", c.name, f));
    }
  }
  return missing;
}

}  // namespace kvs
