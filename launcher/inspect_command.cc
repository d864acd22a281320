// `kvshard inspect --model PATH`: architecture, tensor types, parameter count, KV bytes/token.
#include <algorithm>
#include <cstdio>
#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "launcher/commands.h"
#include "runtime/model/model_weights.h"
#include "launcher/flags.h"
#include "runtime/engine/loaded_model.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/kv/kv_groups.h"
#include "runtime/sched/scheduler.h"

namespace kvs {

int RunInspect() {
  const std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty()) {
    std::fprintf(stderr, "kvshard inspect: --model is required\n");
    return 2;
  }
  auto check = WeightCheckFlag();
  if (!check.ok()) {
    std::fprintf(stderr, "kvshard inspect: %s\n", std::string(check.status().message()).c_str());
    return 2;
  }
  auto quantize = QuantizeFlag();
  if (!quantize.ok()) {
    std::fprintf(stderr, "kvshard inspect: %s\n", std::string(quantize.status().message()).c_str());
    return 2;
  }
  auto m = OpenModel(path, *check, *quantize);
  if (!m.ok()) {
    std::fprintf(stderr, "kvshard inspect: %s\n", std::string(m.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = m->source->config();
  std::printf("model:            %s\n", path.c_str());
  std::printf("format:           %s\n", m->source->format().c_str());
  std::printf("name:             %s\n", c.name.c_str());
  std::printf("architecture:     %s\n", c.architecture.c_str());
  std::printf("layers:           %d\n", c.num_layers);
  std::printf("hidden size:      %d\n", c.hidden_size);
  std::printf("ffn size:         %d\n", c.intermediate_size);
  std::printf("attention heads:  %d query, %d KV (group %d), head_dim %d\n", c.num_q_heads, c.num_kv_heads,
              c.num_q_heads / c.num_kv_heads, c.head_dim);
  std::printf("vocabulary:       %d%s\n", c.vocab_size, c.tie_word_embeddings ? " (tied embeddings)" : "");
  const int32_t windowed = static_cast<int32_t>(
      std::count_if(c.layer_windows.begin(), c.layer_windows.end(), [](int32_t w) { return w > 0; }));
  if (windowed > 0) {
    std::printf("context:          %d tokens; %d of %d layers attend to the last %d (sliding window) and keep only "
                "those in the KV cache\n",
                c.MaxContext(), windowed, c.num_layers, c.sliding_window);
  } else {
    std::printf("context:          %d tokens\n", c.MaxContext());
  }
  const char* scaling = c.rope_scaling.type == RopeScalingType::kLlama3   ? "llama3"
                        : c.rope_scaling.type == RopeScalingType::kLinear ? "linear"
                                                                          : "none";
  std::printf("rope:             theta %.0f, scaling %s (factor %.2f)\n", c.rope_theta, scaling, c.rope_scaling.factor);
  std::printf("qkv bias:         %s\n", c.attention_bias ? "yes" : "no");
  std::printf("parameters:       %lld (%.1f M)\n", static_cast<long long>(c.ParameterCount()), c.ParameterCount() / 1e6);
  std::map<std::string, std::pair<int, int64_t>> types;
  for (const auto& t : m->source->Summaries()) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    auto& e = types[t.dtype];
    ++e.first;
    e.second += n;
  }
  std::printf("tensor types:    ");
  for (const auto& [type, e] : types) std::printf(" %s x%d (%.1f M elems)", type.c_str(), e.first, e.second / 1e6);
  std::printf("\n");
  // What a GPU holds (matrices stored in GGML blocks stay so there; the rest in bf16), as `plan`
  // and the start-up log count it.
  const ModelShard whole = ModelShard::Whole(c);
  std::printf("weights on GPU:   %.2f GiB (bf16 throughout: %.2f GiB)\n",
              ModelWeights::BytesFor(c, whole, DType::kBF16, m->source.get()) / 1073741824.0,
              ModelWeights::BytesFor(c, whole, DType::kBF16) / 1073741824.0);
  // Per format, with scales, from the runtime's own block accounting (16-token blocks; the
  // blocks a sequence of the whole context holds in every layer group, as the scheduler counts).
  const KvGroups groups(c.num_layers, c.layer_windows);
  const int64_t blocks = groups.BlocksHeld(c.MaxContext(), 16, kDefaultMaxTokensPerStep);
  for (KvDType t : {KvDType::kF32, KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4,
                    KvDType::kKivi4, KvDType::kKivi2}) {
    if (KvDTypeHeadDimProblem(t, c.head_dim) != nullptr) continue;
    const double slab = static_cast<double>(KvCache::BytesPerBlock(c, t, 16));
    const double per_layer_token = slab / groups.slots() / 16, all_layers = per_layer_token * c.num_layers;
    if (windowed == 0) {
      std::printf("KV bytes/token:   %.0f (%s); %.1f MiB for %d tokens\n", all_layers, KvDTypeName(t).data(),
                  blocks * slab / (1 << 20), c.MaxContext());
    } else {
      std::printf("KV bytes/token:   %.0f in the %d global layers (%s); %.1f MiB for %d tokens (%.1f MiB if every layer "
                  "kept them all)\n",
                  per_layer_token * (c.num_layers - windowed), c.num_layers - windowed, KvDTypeName(t).data(),
                  blocks * slab / (1 << 20), c.MaxContext(), all_layers * c.MaxContext() / (1 << 20));
    }
  }
  std::printf("tokenizer:        %s\n", m->tokenizer ? absl::StrFormat("%d tokens", m->tokenizer->vocab_size()).c_str() : "none");
  std::printf("chat template:    %s\n",
              m->chat_template ? m->chat_template->Name() : m->chat_template_error.c_str());
  return 0;
}

}  // namespace kvs
