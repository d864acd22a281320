// `kvshard plan`: what fits on a set of GPUs before anything is loaded.
//   kvshard plan --model llama-3-70b --gpu-mem 80GiB --tp 8 --kv-dtype fp8 --context 1M --batch 1
// Prints KV bytes per token, each device's weights / workspace / KV, the token and sequence
// capacity, and whether a workload fits — from runtime/engine/capacity_plan (the accounting the
// runtime itself uses at start-up).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/byte_size.h"
#include "launcher/commands.h"
#include "launcher/engine_flags.h"
#include "launcher/flags.h"
#include "nlohmann/json.hpp"
#include "parallel/sharding_plan.h"
#include "runtime/engine/capacity_plan.h"
#include "runtime/model/weight_source.h"

ABSL_FLAG(std::string, gpu_mem, "80GiB", "plan: memory per device available to kvshard");
ABSL_DECLARE_FLAG(int32_t, batch);  // bench_command.cc: plan reads it as the workload's sequences

namespace kvs {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// What plan reads: the model's shape, and its weight source where one opens (a file, or
// random:<preset>[:<GGML type>]), whose block-typed matrices count at their stored size.
struct PlanningModel {
  ModelConfig config;
  std::unique_ptr<WeightSource> source;
};

// A preset name (configs/models/NAME.json) or a model path. OPT presets are planning-only: their
// two-matrix FFN is planned as a SwiGLU of two thirds the width (the same weight bytes).
absl::StatusOr<PlanningModel> OpenPlanningModel(const std::string& model, WeightQuantization quantize) {
  auto open = [&](const std::string& path) -> absl::StatusOr<std::unique_ptr<WeightSource>> {
    KVS_ASSIGN_OR_RETURN(auto src, OpenWeightSource(path));
    if (quantize == WeightQuantization::kFp8) src = QuantizeToFp8(std::move(src));
    return src;
  };
  const std::filesystem::path preset = std::filesystem::path(PresetDir()) / (model + ".json");
  if (!std::filesystem::exists(preset)) {
    KVS_ASSIGN_OR_RETURN(auto src, open(model));
    ModelConfig c = src->config();
    return PlanningModel{std::move(c), std::move(src)};
  }
  std::ifstream in(preset);
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(preset.string() + ": not a JSON object");
  if (j.value("model_type", "") != "opt") {
    KVS_ASSIGN_OR_RETURN(auto src, open("random:" + model));
    ModelConfig c = src->config();
    return PlanningModel{std::move(c), std::move(src)};
  }
  ModelConfig c;
  c.architecture = "opt";
  c.name = model;
  try {
    c.vocab_size = j.at("vocab_size").get<int32_t>();
    c.hidden_size = j.at("hidden_size").get<int32_t>();
    c.intermediate_size = j.at("ffn_dim").get<int32_t>() * 2 / 3;
    c.num_layers = j.at("num_hidden_layers").get<int32_t>();
    c.num_q_heads = c.num_kv_heads = j.at("num_attention_heads").get<int32_t>();
    c.max_position_embeddings = j.at("max_position_embeddings").get<int32_t>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", preset.string(), e.what()));
  }
  if (c.num_q_heads <= 0 || c.hidden_size % c.num_q_heads != 0) return absl::InvalidArgumentError(preset.string() + ": bad head count");
  c.head_dim = c.hidden_size / c.num_q_heads;
  c.tie_word_embeddings = true;
  return PlanningModel{std::move(c), nullptr};
}

// "bf16 weights", or the block types the source stores its matrices in ("Q4_K, Q6_K matrices").
std::string WeightStorage(const ModelConfig& c, const WeightSource* source) {
  std::vector<std::string> types;
  if (source != nullptr) {
    for (int32_t l = 0; l < c.num_layers; ++l) {
      for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
        const auto t = source->StoredBlockType("model.layers." + std::to_string(l) + "." + m + ".weight");
        const std::string name = t ? std::string(LookupGgmlType(static_cast<uint32_t>(*t))->name) : "bf16";
        if (std::find(types.begin(), types.end(), name) == types.end()) types.push_back(name);
      }
    }
  }
  if (types.empty() || (types.size() == 1 && types[0] == "bf16")) return "bf16 weights";
  std::string s;
  for (const std::string& t : types) s += (s.empty() ? "" : ", ") + t;
  return s + " matrices as stored";
}

absl::Status Plan() {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required (a preset such as llama-3-70b, or a model path)");
  KVS_ASSIGN_OR_RETURN(const WeightQuantization quantize, QuantizeFlag());
  KVS_ASSIGN_OR_RETURN(PlanningModel pm, OpenPlanningModel(model, quantize));
  const ModelConfig& mc = pm.config;
  KVS_ASSIGN_OR_RETURN(size_t gpu_mem, ParseByteSize(absl::GetFlag(FLAGS_gpu_mem)));
  const int tp = absl::GetFlag(FLAGS_tp);
  KVS_ASSIGN_OR_RETURN(ShardingPlan sharding,
                       PlanSharding(mc, tp, pm.source != nullptr ? FfnBlockAlignment(mc, *pm.source) : 1));
  KVS_ASSIGN_OR_RETURN(EngineConfig ec, EngineConfigFromFlags(/*cpu=*/false));  // planning is for GPUs
  const KvDType kv = ec.kv_dtype.value_or(KvDType::kBF16);
  KVS_ASSIGN_OR_RETURN(ec, ResolveEngineConfig(ec, mc));
  int64_t context = ec.scheduler.max_model_len;
  if (const std::string c = absl::GetFlag(FLAGS_context); !c.empty()) {
    KVS_ASSIGN_OR_RETURN(context, ParseTokenCount(c));
  }
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  if (batch < 1) return absl::InvalidArgumentError("--batch must be >= 1");

  const CapacityPlan plan =
      PlanCapacity(mc, sharding.ranks, DType::kBF16, kv, static_cast<int64_t>(gpu_mem), ec, pm.source.get());
  const KvGroups& groups = plan.groups;
  const bool windowed = groups.any_windowed();
  const double block_bytes_whole = static_cast<double>(KvCache::BytesPerBlock(mc, kv, ec.scheduler.block_size));
  std::printf("model            %s: %d layers, %d query / %d KV heads x %d, %.1f B parameters (%s)\n", mc.name.c_str(),
              mc.num_layers, mc.num_q_heads, mc.num_kv_heads, mc.head_dim, mc.ParameterCount() / 1e9,
              WeightStorage(mc, pm.source.get()).c_str());
  std::printf("layout           tp %d, block size %d, KV %s, %.1f GiB per device, memory fraction %.2f\n", tp,
              ec.scheduler.block_size, KvDTypeName(kv).data(), gpu_mem / kGiB, ec.memory_fraction);
  const double layer_per_token = block_bytes_whole / groups.slots() / ec.scheduler.block_size;  // one layer's K and V
  if (!windowed) {
    const double whole_per_token = block_bytes_whole / ec.scheduler.block_size;
    std::printf("KV per token     %.0f bytes (%.1f KiB) for the whole model\n", whole_per_token, whole_per_token / 1024);
  } else {
    int32_t global_layers = 0;
    for (int32_t l = 0; l < mc.num_layers; ++l) global_layers += mc.LayerWindow(l) == 0 ? 1 : 0;
    std::printf("KV per token     %.0f bytes (%.1f KiB) in the %d global layers; the %d sliding-window layers keep only "
                "their window (%.0f bytes per token in all layers)\n",
                layer_per_token * global_layers, layer_per_token * global_layers / 1024, global_layers,
                mc.num_layers - global_layers, layer_per_token * mc.num_layers);
    std::printf(
        "KV groups        %s: a block holds %d layer%s' K and V for %d tokens; each sequence has blocks in "
        "every group, a windowed group's only for its window (and one %d-token step)\n",
        groups.Describe().c_str(), groups.slots(), groups.slots() == 1 ? "" : "s", ec.scheduler.block_size,
        ec.scheduler.max_tokens_per_step);
  }
  for (size_t r = 0; r < plan.ranks.size(); ++r) {
    const RankCapacity& rc = plan.ranks[r];
    std::printf("device %-3zu       weights %.2f GiB, workspace %.2f GiB, ", r, rc.weight_bytes / kGiB, rc.workspace_bytes / kGiB);
    if (rc.window_bytes > 0) std::printf("offload staging window %.2f GiB, ", rc.window_bytes / kGiB);
    if (windowed) {
      std::printf("KV %.2f GiB at %lld bytes per block (%d layers x %d tokens) -> %d blocks\n", rc.kv_bytes / kGiB,
                  static_cast<long long>(rc.bytes_per_block), groups.slots(), ec.scheduler.block_size, rc.blocks);
    } else {
      std::printf("KV %.2f GiB at %.0f bytes/token -> %d blocks\n", rc.kv_bytes / kGiB, rc.kv_bytes_per_token, rc.blocks);
    }
  }
  // The longest sequence that fits: unbounded when every layer keeps only a window.
  auto longest = [&](const CapacityPlan& p) {
    const int64_t t = p.max_tokens();
    return t >= (int64_t{1} << 40) ? std::string("any number of") : absl::StrFormat("%lld", static_cast<long long>(t));
  };
  if (!windowed) {
    std::printf("capacity         %d blocks x %d = %lld tokens per group; %lld sequences of %lld tokens at once\n",
                plan.blocks, plan.block_size, static_cast<long long>(plan.max_tokens()),
                static_cast<long long>(plan.MaxSequences(context)), static_cast<long long>(context));
  } else {
    // The saving: the same model and memory with every layer global.
    ModelConfig all_global = mc;
    all_global.layer_windows.clear();
    const CapacityPlan before =
        PlanCapacity(all_global, sharding.ranks, DType::kBF16, kv, static_cast<int64_t>(gpu_mem), ec, pm.source.get());
    std::printf("capacity         %d blocks per group: one sequence of %s tokens; %lld sequences of %lld tokens at once "
                "(every layer keeping the whole context: %s tokens; %lld sequences)\n",
                plan.blocks, longest(plan).c_str(), static_cast<long long>(plan.MaxSequences(context)),
                static_cast<long long>(context), longest(before).c_str(),
                static_cast<long long>(before.MaxSequences(context)));
  }
  const int64_t need_blocks = batch * plan.BlocksFor(context);
  const double tokens = static_cast<double>(batch) * context;
  const double busiest_block = plan.ranks.empty() ? 0 : static_cast<double>(plan.ranks.front().bytes_per_block);
  std::printf("workload         %lld x %lld tokens = %.3g tokens of KV: %.2f GB (%.2f GiB) in all, %.2f GiB on the busiest device\n",
              static_cast<long long>(batch), static_cast<long long>(context), tokens, need_blocks * block_bytes_whole / 1e9,
              need_blocks * block_bytes_whole / kGiB, need_blocks * busiest_block / kGiB);
  if (context > mc.MaxContext()) {
    std::printf("note             %lld tokens exceed the model's %d-token context\n", static_cast<long long>(context), mc.MaxContext());
  }
  if (need_blocks <= plan.blocks) {
    std::printf("fits             yes (%.0f%% of the KV capacity)\n", 100.0 * need_blocks / std::max(plan.blocks, 1));
    return absl::OkStatus();
  }
  double short_bytes = 0;
  for (const RankCapacity& rc : plan.ranks) {
    short_bytes = std::max(short_bytes, static_cast<double>(need_blocks - plan.blocks) * rc.bytes_per_block);
  }
  // The offload tier (--kv-offload-memory): the same block count on every rank, as at start-up.
  int64_t offload_blocks = ec.kv_offload_bytes > 0 ? int64_t{1} << 30 : 0;
  for (const RankCapacity& rc : plan.ranks) {
    offload_blocks = std::min<int64_t>(offload_blocks, static_cast<int64_t>(ec.kv_offload_bytes) / rc.bytes_per_block);
  }
  if (need_blocks <= plan.blocks + offload_blocks) {
    // Attention reads the offloaded blocks over the host link every step: PCIe 5 x16 moved 50 GB/s
    // on the H200 machine (docs/performance.md); the runtime logs its own measurement.
    constexpr double kHostLinkBytesPerS = 50e9;
    std::printf("fits             yes, with %.2f GiB of KV per device in the offload tier (host memory): each decode step "
                "reads it over the host link, about %.0f ms at 50 GB/s\n",
                short_bytes / kGiB, 1e3 * short_bytes / kHostLinkBytesPerS);
    return absl::OkStatus();
  }
  std::printf("fits             NO: short by %.2f GiB of KV per device (%lld blocks of %d tokens)", short_bytes / kGiB,
              static_cast<long long>(need_blocks - plan.blocks), ec.scheduler.block_size);
  if (offload_blocks > 0) std::printf(", %.2f GiB more than the offload tier holds", (short_bytes - offload_blocks * plan.ranks.front().bytes_per_block) / kGiB);
  std::printf("; options: more --tp, a smaller --kv-dtype (fp8/int8 halve bf16, int4 quarters it), host offload "
              "(--kv-offload-memory), or a smaller batch/context\n");
  return absl::OkStatus();
}

}  // namespace

int RunPlan() { return ReportAndExit("plan", Plan()); }

}  // namespace kvs
