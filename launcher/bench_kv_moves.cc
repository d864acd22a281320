#include "launcher/bench_kv_moves.h"

#include <algorithm>
#include <chrono>
#include <functional>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/byte_size.h"
#include "launcher/engine_flags.h"
#include "launcher/flags.h"
#include "runtime/engine/model_runner.h"
#include "runtime/kv/kv_cache.h"
#include "runtime/model/model_weights.h"

ABSL_FLAG(int32_t, move_blocks, 32,
          "bench --kernel kv-moves: blocks swapped out and as many swapped in during the timed step");
ABSL_DECLARE_FLAG(int32_t, batch);
ABSL_DECLARE_FLAG(int32_t, iters);

namespace kvs {
namespace {

using Clock = std::chrono::steady_clock;

// Mean seconds of `run` over `iters` calls, after two untimed ones (graph capture, warm-up).
absl::StatusOr<double> TimeIt(int32_t iters, const std::function<absl::Status()>& run) {
  for (int i = 0; i < 2; ++i) KVS_RETURN_IF_ERROR(run());
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) KVS_RETURN_IF_ERROR(run());
  return std::chrono::duration<double>(Clock::now() - t0).count() / iters;
}

}  // namespace

absl::Status BenchKvMoves(Backend& backend, const WeightSource& source) {
  const ModelConfig& c = source.config();
  const int32_t batch = absl::GetFlag(FLAGS_batch), iters = absl::GetFlag(FLAGS_iters);
  const int32_t moves = absl::GetFlag(FLAGS_move_blocks), bs = absl::GetFlag(FLAGS_block_size);
  int64_t ctx64 = 4096;
  if (const std::string s = absl::GetFlag(FLAGS_context); !s.empty()) {
    KVS_ASSIGN_OR_RETURN(ctx64, ParseTokenCount(s));
  }
  if (batch < 1 || batch > 1024 || iters < 1 || moves < 1 || moves > 65536 || ctx64 < 1 || ctx64 > c.MaxContext()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "bench --kernel kv-moves: --batch 1..1024, --iters >= 1, --move-blocks 1..65536 and --context 1..%d",
        c.MaxContext()));
  }
  if (bs < 1 || bs > 1024) return absl::InvalidArgumentError("--block-size must be in 1..1024");
  const auto ctx = static_cast<int32_t>(ctx64);
  KVS_ASSIGN_OR_RETURN(const KvDType kv_dtype, KvDTypeFromFlags(backend));
  if (KvChannelQuantized(kv_dtype)) {  // its hand-built step has no residual blocks
    return absl::InvalidArgumentError(
        absl::StrFormat("bench --kernel kv-moves does not take --kv-dtype %s", KvDTypeName(kv_dtype)));
  }
  KVS_ASSIGN_OR_RETURN(ModelWeights weights, ModelWeights::Load(source, backend));
  // The step's sequences own the first blocks; the moves use blocks past them, so the step's
  // results do not depend on them (only its timing does).
  // Every KV group (sliding-window layers) has blocks of its own.
  const int32_t groups = KvGroups(c.num_layers, c.layer_windows).num_groups();
  const int32_t per_seq = (ctx + bs - 1) / bs, group_blocks = batch * per_seq, step_blocks = groups * group_blocks;
  KVS_ASSIGN_OR_RETURN(KvCache cache, KvCache::Create(backend, c, kv_dtype, bs, step_blocks + 2 * moves));
  KVS_RETURN_IF_ERROR(cache.AddHostTier(backend, 2 * moves));
  const RunnerLimits limits{batch, batch, per_seq, /*graphs=*/!absl::GetFlag(FLAGS_enforce_eager), /*overlap_kv_moves=*/true};
  RunnerLimits queued_limits = limits;
  queued_limits.overlap_kv_moves = false;
  KVS_ASSIGN_OR_RETURN(ModelRunner overlapped, ModelRunner::Create(backend, weights, cache, limits));
  KVS_ASSIGN_OR_RETURN(ModelRunner queued, ModelRunner::Create(backend, weights, cache, queued_limits));

  StepInput step;
  step.Clear();
  for (int32_t i = 0; i < batch; ++i) {
    step.token_ids.push_back(i % c.vocab_size);
    step.positions.push_back(ctx - 1);
    step.slot_mapping.push_back((i * per_seq + per_seq - 1) * bs + (ctx - 1) % bs);
    step.query_start.push_back(i + 1);
    step.context_len.push_back(ctx);
    step.logit_rows.push_back(i);
    for (int32_t b = 0; b < per_seq; ++b) step.block_table.push_back(i * per_seq + b);
  }
  step.max_blocks_per_seq = per_seq;
  RepeatForKvGroups(step, groups, group_blocks, bs);
  StepInput moving = step;
  for (int32_t i = 0; i < moves; ++i) {
    moving.swap_out.insert(moving.swap_out.end(), {step_blocks + i, i});
    moving.swap_in.insert(moving.swap_in.end(), {moves + i, step_blocks + moves + i});
  }
  auto run = [](ModelRunner& r, const StepInput& in) {
    return [&r, &in]() { return r.Execute(in, /*greedy_only=*/true).status(); };  // waits for the ids
  };
  KVS_ASSIGN_OR_RETURN(const double alone, TimeIt(iters, run(overlapped, step)));
  KVS_ASSIGN_OR_RETURN(const double with_overlap, TimeIt(iters, run(overlapped, moving)));
  KVS_ASSIGN_OR_RETURN(const double with_queue, TimeIt(iters, run(queued, moving)));
  KVS_ASSIGN_OR_RETURN(const double moves_alone, TimeIt(iters, [&]() -> absl::Status {
    KVS_RETURN_IF_ERROR(cache.QueueMoves(backend, moving.swap_out, {}, moving.swap_in, /*by_layer=*/false));
    return backend.Synchronize();
  }));
  const double bytes = 2.0 * moves * static_cast<double>(cache.bytes_per_block());
  absl::PrintF("| kv moves | %s | %s KV %s B=%d L=%d%s, %d blocks out + %d in (%.0f MiB) | step %.3f ms | moves alone %.3f ms "
              "(%.1f GB/s) | step + moves: queued first %.3f ms, overlapped %.3f ms | %.0f%% of the moves' time hidden |\n",
              backend.Name(), c.name, KvDTypeName(kv_dtype), batch, ctx,
              absl::GetFlag(FLAGS_enforce_eager) ? " (eager)" : "", moves, moves,
              bytes / 1048576.0, alone * 1e3, moves_alone * 1e3, bytes / moves_alone / 1e9, with_queue * 1e3,
              with_overlap * 1e3, 100.0 * (with_queue - with_overlap) / moves_alone);
  return absl::OkStatus();
}

}  // namespace kvs
