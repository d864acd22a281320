// `kvshard perplexity --model PATH --text FILE [--context 512] [--kv-dtype int8]`: how well the
// model predicts a text, through the real paged KV cache — so the cost of a KV format (fp8, int8,
// int4) in accuracy is measured, not assumed. The text is cut into windows of --context tokens;
// each window is prefilled in chunks of --max-tokens-per-step (later chunks read the earlier ones'
// KV back from the cache in its format) and every token after the first of a window is scored.
// Prints perplexity, mean negative log-likelihood and next-token (top-1) accuracy.
// --llama-cpp-windows scores as llama-perplexity does: only whole windows, and in each only the
// predictions from position context/2 on (no BOS is inserted: kvshard's runs here use models whose
// GGUF says add_bos_token = false, where llama.cpp inserts none either).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/byte_size.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "runtime/engine/capacity_plan.h"
#include "launcher/engine_flags.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/engine/logprobs.h"
#include "runtime/engine/model_runner.h"
#include "runtime/model/model_weights.h"

ABSL_FLAG(std::string, text, "", "perplexity: UTF-8 text file to score");
ABSL_FLAG(bool, llama_cpp_windows, false,
          "perplexity: score as llama.cpp's llama-perplexity does (whole windows only, each scored on its second "
          "half), for side-by-side figures on the same file, text and --context");

namespace kvs {
namespace {

constexpr uintmax_t kMaxTextBytes = 64u << 20;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrFormat("--text %s: %s", path, ec.message()));
  if (size == 0) return absl::InvalidArgumentError(absl::StrFormat("--text %s is empty", path));
  if (size > kMaxTextBytes) return absl::InvalidArgumentError(absl::StrFormat("--text %s is over 64 MiB", path));
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status Perplexity() {
  const std::string model_path = absl::GetFlag(FLAGS_model), text_path = absl::GetFlag(FLAGS_text);
  if (model_path.empty() || text_path.empty()) return absl::InvalidArgumentError("--model and --text are required");
  int64_t window = 512;
  if (const std::string c = absl::GetFlag(FLAGS_context); !c.empty()) {
    KVS_ASSIGN_OR_RETURN(window, ParseTokenCount(c));
  }
  const int32_t chunk = absl::GetFlag(FLAGS_max_tokens_per_step), block_size = absl::GetFlag(FLAGS_block_size);
  if (window < 2 || window > (1 << 20)) return absl::InvalidArgumentError("--context must be in 2..1M tokens");
  if (chunk < 1) return absl::InvalidArgumentError("--max-tokens-per-step must be >= 1");
  if (const int32_t r = absl::GetFlag(FLAGS_kv_residual_tokens); r < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("--kv-residual-tokens must be >= 0, got %d", r));
  }
  if (block_size < 1 || block_size > 1024) return absl::InvalidArgumentError("--block-size must be in 1..1024");
  KVS_ASSIGN_OR_RETURN(std::string text, ReadText(text_path));
  KVS_ASSIGN_OR_RETURN(const WeightQuantization quantize, QuantizeFlag());
  KVS_ASSIGN_OR_RETURN(LoadedModel m, OpenModel(model_path, WeightCheck::kAuto, quantize));
  if (!m.tokenizer) return absl::InvalidArgumentError(absl::StrFormat("%s has no tokenizer to read the text with", model_path));
  KVS_ASSIGN_OR_RETURN(std::vector<int32_t> ids, m.tokenizer->Encode(text, /*add_special_tokens=*/false));
  if (ids.size() < 2) return absl::InvalidArgumentError("--text holds fewer than two tokens");
  const ModelConfig& mc = m.source->config();
  window = std::min<int64_t>({window, static_cast<int64_t>(ids.size()), mc.MaxContext()});

  KVS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, SingleProcessBackend());
  KVS_ASSIGN_OR_RETURN(const KvDType kv_dtype, KvDTypeFromFlags(*backend));
  KVS_ASSIGN_OR_RETURN(ModelWeights weights, ModelWeights::Load(*m.source, *backend));
  const int32_t blocks = static_cast<int32_t>((window + block_size - 1) / block_size);
  // Blocks for every KV group (one for a model without sliding windows): the window's in each.
  const int32_t groups = KvGroups(mc.num_layers, mc.layer_windows).num_groups();
  KVS_ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(*backend, mc, kv_dtype, block_size, groups * blocks));
  KVS_RETURN_IF_ERROR(
      cache.AddResiduals(*backend, 1, absl::GetFlag(FLAGS_kv_residual_tokens),
                         absl::GetFlag(FLAGS_kv_sink)));  // channel-quantized formats: the one sequence's
  const int32_t step_tokens = static_cast<int32_t>(std::min<int64_t>(chunk, window));
  // Every row of a chunk needs logits, so the runner is sized for step_tokens logit rows.
  KVS_ASSIGN_OR_RETURN(ModelRunner runner,
                       ModelRunner::Create(*backend, weights, cache, RunnerLimits{step_tokens, step_tokens, blocks}));

  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  double nll = 0;
  int64_t scored = 0, correct = 0;
  StepInput in;
  const int64_t vocab = mc.vocab_size;
  const bool llama_windows = absl::GetFlag(FLAGS_llama_cpp_windows);
  const int32_t first_scored = llama_windows ? static_cast<int32_t>(window / 2) : 0;
  for (size_t w0 = 0; w0 + 1 < ids.size(); w0 += window) {
    const int32_t len = static_cast<int32_t>(std::min<int64_t>(window, ids.size() - w0));
    if (len < 2 || (llama_windows && len < window)) break;
    for (int32_t a = 0; a < len; a += step_tokens) {
      const int32_t b = std::min(len, a + step_tokens);
      in.Clear();
      for (int32_t p = a; p < b; ++p) {
        in.token_ids.push_back(ids[w0 + p]);
        in.positions.push_back(p);
        in.slot_mapping.push_back(p);  // block j of the window is cache block j
        in.logit_rows.push_back(p - a);
      }
      in.query_start.push_back(b - a);
      in.context_len.push_back(b);
      in.max_blocks_per_seq = blocks;
      for (int32_t j = 0; j < blocks; ++j) in.block_table.push_back(j);
      if (KvChannelQuantized(kv_dtype)) PlaceTailsInResiduals(in, cache.ring(), groups);
      RepeatForKvGroups(in, groups, blocks, block_size, cache.ring().blocks);
      KVS_ASSIGN_OR_RETURN(ModelRunner::Output out, runner.Execute(in));
      for (int32_t p = std::max(a, first_scored); p < b && p + 1 < len; ++p) {
        const int32_t target = ids[w0 + p + 1];
        const TokenLogprob lp = ComputeLogprob(out.logits.subspan(static_cast<size_t>(p - a) * vocab, vocab), target, 1);
        nll -= lp.logprob;
        correct += lp.top[0].first == target;
        ++scored;
      }
    }
  }
  if (scored == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("--text holds %zu tokens: not one whole window of --context %lld",
                                                      ids.size(), static_cast<long long>(window)));
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("perplexity %.4f  nll %.5f  top1 %.2f%%  tokens %lld  windows of %lld  kv %s  backend %s  (%.1f s)\n",
              std::exp(nll / scored), nll / scored, 100.0 * correct / scored, static_cast<long long>(scored),
              static_cast<long long>(window), KvDTypeName(kv_dtype).data(), backend->Name().c_str(), secs);
  return absl::OkStatus();
}

}  // namespace

int RunPerplexity() { return ReportAndExit("perplexity", Perplexity()); }

}  // namespace kvs
