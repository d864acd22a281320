// `kvshard make-model --preset NAME --out DIR [--seed N]`: writes a Hugging Face checkpoint
// (bf16 safetensors, sharded at 4 GiB) with the same seeded random weights that
// `--model random:NAME:N` builds in memory, so large shapes need no download.
#include <cstdio>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "nlohmann/json.hpp"
#include "runtime/model/checkpoint_writer.h"
#include "runtime/model/weight_source.h"

ABSL_FLAG(std::string, preset, "", "make-model: preset name (configs/models/<name>.json)");
ABSL_FLAG(std::string, out, "", "make-model: output directory");

namespace kvs {
namespace {

absl::Status MakeModel() {
  const std::string preset = absl::GetFlag(FLAGS_preset), out = absl::GetFlag(FLAGS_out);
  if (preset.empty() || out.empty()) return absl::InvalidArgumentError("--preset and --out are required");
  const std::string spec = absl::StrFormat("random:%s:%d", preset, absl::GetFlag(FLAGS_seed));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<WeightSource> src, OpenRandomWeights(spec));
  std::ifstream in(PresetDir() + "/" + preset + ".json");
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
  if (config.is_discarded()) return absl::InvalidArgumentError("preset file is not valid JSON");
  KVS_RETURN_IF_ERROR(WriteHfCheckpoint(*src, config, out, uint64_t{4} << 30));
  std::printf("wrote %s: %s, %.2f GB of bf16 weights (seed %llu)\n", out.c_str(), preset.c_str(),
              src->config().ParameterCount() * 2 / 1e9, static_cast<unsigned long long>(absl::GetFlag(FLAGS_seed)));
  return absl::OkStatus();
}

}  // namespace

int RunMakeModel() { return ReportAndExit("make-model", MakeModel()); }

}  // namespace kvs
