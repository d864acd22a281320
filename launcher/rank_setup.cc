#include "launcher/rank_setup.h"

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/backend_factory.h"
#include "kernels/common/status_macros.h"
#include "launcher/commands.h"
#include "launcher/engine_flags.h"
#include "launcher/flags.h"

namespace kvs {

std::string RankRuntime::tag() const { return absl::StrFormat("[rank %d]", world.rank); }

absl::StatusOr<std::unique_ptr<RankRuntime>> StartRank(
    const std::string& model_path, const std::function<void(EngineConfig&, const ModelConfig&)>& adjust) {
  const auto t0 = std::chrono::steady_clock::now();
  auto rt = std::make_unique<RankRuntime>();
  KVS_ASSIGN_OR_RETURN(rt->world, DetectWorld());
  const int tp = absl::GetFlag(FLAGS_tp);
  const double timeout_s = absl::GetFlag(FLAGS_comm_timeout);
  if (!(timeout_s > 0 && timeout_s <= 86400)) {
    return absl::InvalidArgumentError(absl::StrFormat("--comm-timeout must be in (0, 86400] seconds, got %g", timeout_s));
  }
  // Checked before MPI starts so a single process gets the error, not a hang.
  KVS_RETURN_IF_ERROR(LayoutFor(rt->world, tp).status());
  KVS_ASSIGN_OR_RETURN(rt->dp_routing, ParseDpRouting(absl::GetFlag(FLAGS_dp_routing)));
  if (rt->world.size > 1) {
    KVS_ASSIGN_OR_RETURN(rt->mpi, MpiSession::Start(rt->world));
  }
  KVS_ASSIGN_OR_RETURN(const WeightCheck check, WeightCheckFlag());
  KVS_ASSIGN_OR_RETURN(const WeightQuantization quantize, QuantizeFlag());
  KVS_ASSIGN_OR_RETURN(LoadedModel model, OpenModel(model_path, check, quantize));
  rt->model = std::make_unique<LoadedModel>(std::move(model));
  const ModelConfig& mc = rt->model->source->config();
  KVS_ASSIGN_OR_RETURN(rt->backend, RankBackend(rt->world.local_rank, rt->world.size));
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  KVS_ASSIGN_OR_RETURN(const AllReduceMode all_reduce, ParseAllReduceMode(absl::GetFlag(FLAGS_all_reduce)));
  // FFN rows split along whole blocks where the backend keeps the file's blocks.
  const int32_t ffn_align = tp > 1 ? FfnBlockAlignment(mc, *rt->model->source) : 1;
  KVS_ASSIGN_OR_RETURN(rt->context, RankContext::Create(rt->world, tp, mc, *rt->backend, timeout, all_reduce, ffn_align));
  KVS_ASSIGN_OR_RETURN(ModelWeights w, ModelWeights::Load(*rt->model->source, *rt->backend, rt->context->shard()));
  rt->weights = std::make_unique<ModelWeights>(std::move(w));
  KVS_ASSIGN_OR_RETURN(EngineConfig config, EngineConfigFromFlags(*rt->backend));
  if (adjust) adjust(config, mc);
  const TensorParallel tpx = rt->context->tensor_parallel();
  const GroupLayout& layout = rt->context->layout();
  const KvCapacity* capacity = nullptr;
  const KvCache* cache = nullptr;
  KvDType kv_dtype = KvDType::kF32;
  if (layout.leader()) {
    const LoadedModel& m = *rt->model;
    const Tokenizer* tok = m.tokenizer ? &*m.tokenizer : nullptr;
    KVS_ASSIGN_OR_RETURN(rt->engine, Engine::Create(*rt->backend, *rt->weights, tok, config, tpx));
    if (m.chat_template && tok) {
      if (int32_t id = tok->TokenId(m.chat_template->EndOfTurn()); id >= 0) rt->engine->AddStopTokenId(id);
    }
    capacity = &rt->engine->kv_capacity();
    cache = &rt->engine->kv_cache();
    kv_dtype = cache->dtype();
  } else {
    KVS_ASSIGN_OR_RETURN(rt->worker, StepWorker::Create(*rt->backend, *rt->weights, config, tpx));
    capacity = &rt->worker->kv_capacity();
    cache = &rt->worker->kv_cache();
    kv_dtype = cache->dtype();
  }
  rt->load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rt->multi_rank() || absl::GetFlag(FLAGS_verbose)) {
    const ModelShard& s = rt->context->shard();
    std::fprintf(stderr,
                 "%s group %d/%d, tp rank %d/%d (%s, %s): q heads [%d,%d) kv heads [%d,%d) ffn [%d,%d) vocab [%d,%d); "
                 "%.1f MiB weights; KV capacity (%s) %d blocks here, %d for the group (%.1f MiB here); loaded in %.1f s\n",
                 rt->tag().c_str(), layout.group, layout.dp, layout.group_rank, layout.tp, rt->backend->Name().c_str(),
                 rt->context->transport(), s.q_heads.begin, s.q_heads.end, s.kv_heads.begin, s.kv_heads.end,
                 s.intermediate.begin, s.intermediate.end, s.vocab.begin, s.vocab.end, rt->weights->bytes() / 1048576.0,
                 KvDTypeName(kv_dtype).data(), capacity->local_blocks, capacity->blocks, capacity->blocks * capacity->bytes_per_block / 1048576.0,
                 rt->load_seconds);
    if (const KvGroups& g = cache->groups(); g.any_windowed()) {
      // Sliding-window layers: what the blocks hold, in the scheduler's own count.
      const int64_t longest = g.LongestFitting(capacity->blocks, config.scheduler.block_size,
                                               config.scheduler.max_tokens_per_step, int64_t{1} << 40);
      std::fprintf(stderr, "%s KV groups: %s, each block one slab of them; the longest sequence that fits: %s tokens\n",
                   rt->tag().c_str(), g.Describe().c_str(),
                   longest >= (int64_t{1} << 40) ? "any number of" : std::to_string(longest).c_str());
    }
    if (cache->num_residual_seqs() > 0) {
      // Channel-quantized KV: the full-precision window, and what it takes beside the blocks.
      const int32_t ring = cache->ring().rotating(), bs = config.scheduler.block_size;
      std::fprintf(stderr,
                   "%s %s KV: each running sequence's newest %d-%d tokens in bf16 (a ring of %d blocks%s; %.1f MiB for "
                   "%d sequences), older blocks quantized whole\n",
                   rt->tag().c_str(), KvDTypeName(kv_dtype).data(), (ring - 1) * bs, ring * bs - 1, ring,
                   cache->ring().sink ? ", and its first block in a sink block" : "",
                   KvCache::ResidualBytes(rt->weights->local_config(), kv_dtype, bs, cache->num_residual_seqs(),
                                          config.kv_residual_tokens, config.kv_sink) /
                       1048576.0,
                   cache->num_residual_seqs());
    }
    if (rt->backend->Name() == "cpu") {
      std::fprintf(stderr, "%s cpu backend: %s\n", rt->tag().c_str(),
                   CpuBackendSummary(absl::GetFlag(FLAGS_device) == "cpu-reference").c_str());
    }
  }
  return rt;
}

absl::Status RunWorker(RankRuntime& rt) {
  KVS_ASSIGN_OR_RETURN(int64_t steps, rt.worker->Run());
  if (absl::GetFlag(FLAGS_verbose)) std::fprintf(stderr, "%s worker ran %lld steps\n", rt.tag().c_str(), static_cast<long long>(steps));
  return absl::OkStatus();
}

int FinishRank(const char* command, const absl::Status& s) {
  const int code = ReportAndExit(command, s);
  if (code != 0) {
    std::fflush(stdout);
    std::fflush(stderr);
    AbortAllRanks(code);
  }
  return code;
}

}  // namespace kvs
