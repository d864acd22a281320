// `kvshard bench`: offline throughput on synthetic requests, or one kernel on its own.
//   kvshard bench --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 128
//   kvshard bench --model random:llama-3-8b --kernel attention --batch 32 --context 4096
// Prints one table row per figure with the bytes moved and the achieved rate, so it can be set
// beside the measured ceilings in docs/performance.md.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#if defined(KVS_HAVE_CUDA)
#include <cuda_profiler_api.h>
#endif
#include "kernels/common/half_convert.h"
#include "kernels/common/sampling.h"
#include "kernels/common/status_macros.h"
#include "launcher/bench_all_reduce.h"
#include "launcher/bench_kv_moves.h"
#include "launcher/bench_linear.h"
#include "launcher/bench_stats.h"
#include "launcher/byte_size.h"
#include "launcher/commands.h"
#include "launcher/engine_flags.h"
#include "launcher/flags.h"
#include "launcher/rank_setup.h"
#include "runtime/engine/capacity_plan.h"
#if defined(KVS_HAVE_SERVER)
#include "absl/flags/declare.h"
#include "launcher/serve_bench.h"
ABSL_DECLARE_FLAG(std::string, url);
#endif
#include "runtime/engine/engine.h"
#include "runtime/engine/loaded_model.h"

ABSL_FLAG(int32_t, input_len, 512, "bench: prompt tokens per request");
ABSL_FLAG(int32_t, output_len, 128, "bench: generated tokens per request");
ABSL_FLAG(int32_t, num_prompts, 64, "bench: number of requests");
ABSL_FLAG(std::string, kernel, "",
          "bench: time one kernel instead of the engine (attention = decode, prefill, linear = the weight matrices, sample = "
          "token sampling, all-reduce = NCCL and the peer-memory all-reduce under mpirun, kv-moves = "
          "a decode step with block swaps beside it)");
ABSL_FLAG(int32_t, batch, 1, "bench --kernel attention, plan: sequences");
ABSL_FLAG(int32_t, iters, 50, "bench --kernel: timed repetitions");
ABSL_FLAG(bool, profile_decode, false,
          "bench: bracket the decode steps after the first pure one with cudaProfilerStart/Stop, so that "
          "`ncu --profile-from-start off` (or `nsys --capture-range=cudaProfilerApi`) sees decode steps only");
ABSL_FLAG(std::string, dataset, "",
          "bench: 'sharegpt-like' draws prompt/output lengths from log-normal fits of ShareGPT (means 161 in / 338 "
          "out tokens, as in the vLLM paper) instead of --input-len/--output-len");
ABSL_FLAG(double, length_scale, 1.0, "bench --dataset: multiply the dataset's mean lengths (smaller runs)");
ABSL_FLAG(bool, static_batching, false,
          "bench: the baseline paging is measured against: static batches, each request reserving a full "
          "--max-model-len context");
ABSL_FLAG(int32_t, query_len, 0,
          "bench --kernel prefill: queries per sequence, the context's last positions (a chunk over the pages before "
          "it); 0: the whole context");
ABSL_FLAG(bool, shuffle_blocks, true, "bench --kernel attention: scatter pages randomly (as after churn)");

namespace kvs {
namespace {

// cudaProfilerStart / Stop where the build has CUDA (nothing otherwise): --profile-decode.
void SetProfilerRange(bool on) {
#if defined(KVS_HAVE_CUDA)
  if (on) {
    cudaProfilerStart();
  } else {
    cudaProfilerStop();
  }
#else
  (void)on;
#endif
}

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Real codes and scales: random K/V rows written through WriteKv, a chunk of slots at a time.
absl::Status FillWrittenSlots(Backend& backend, const PagedKvView& cache, DType dt, int64_t slots) {
  const int64_t width = cache.SlotStride();
  const int64_t chunk = std::min<int64_t>(slots, 65536);
  KVS_ASSIGN_OR_RETURN(DeviceBuffer rows, backend.Allocate(chunk * width * DTypeSize(dt)));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer slot_ids, backend.Allocate(chunk * sizeof(int32_t)));
  std::vector<int32_t> ids(chunk);
  for (int64_t first = 0; first < slots; first += chunk) {
    const int64_t n = std::min(chunk, slots - first);
    std::iota(ids.begin(), ids.begin() + n, static_cast<int32_t>(first));
    KVS_RETURN_IF_ERROR(backend.CopyToDevice(ids.data(), slot_ids.data(), n * sizeof(int32_t)));
    const TensorView r = rows.View(dt, n, width);
    KVS_RETURN_IF_ERROR(backend.FillRandom(r, 1 + first, 0.0f, 1.0f));
    KVS_RETURN_IF_ERROR(backend.WriteKv(r, r, slot_ids.as<int32_t>(), cache));
  }
  return backend.Synchronize();
}

// Channel-quantized caches (int4 / int2) are written a whole block at a time: every block sealed
// from random rows, as steps of one-block sequences with a one-block ring (each block sealed
// from its step's rows alone).
absl::Status FillSealedBlocks(Backend& backend, PagedKvView cache, DType dt) {
  const int32_t bs = cache.block_size, per_step = std::max(1, 65536 / bs);
  const int64_t width = cache.SlotStride();
  cache.residual_blocks = 1;
  KVS_ASSIGN_OR_RETURN(DeviceBuffer rows,
                       backend.Allocate(static_cast<int64_t>(per_step) * bs * width * DTypeSize(dt)));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer meta, backend.Allocate((4 * per_step + 1) * sizeof(int32_t)));
  int32_t* m = meta.as<int32_t>();
  std::vector<int32_t> host(4 * per_step + 1);
  for (int32_t first = 0; first < cache.num_blocks; first += per_step) {
    const int32_t n = std::min(per_step, cache.num_blocks - first);
    // query_start [n + 1], context_len [n], block_table [n] (one block each), sealed [n].
    for (int32_t i = 0; i <= n; ++i) host[i] = i * bs;
    for (int32_t i = 0; i < n; ++i) {
      host[n + 1 + i] = bs;
      host[2 * n + 1 + i] = first + i;
      host[3 * n + 1 + i] = 0;
    }
    KVS_RETURN_IF_ERROR(backend.CopyToDevice(host.data(), m, (4 * n + 1) * sizeof(int32_t)));
    AttentionBatch b;
    b.num_seqs = n;
    b.num_tokens = n * bs;
    b.max_blocks_per_seq = 1;
    b.max_context_len = bs;
    b.max_query_len = bs;
    b.query_start = m;
    b.context_len = m + n + 1;
    b.block_table = m + 2 * n + 1;
    b.sealed = m + 3 * n + 1;
    const TensorView r = rows.View(dt, b.num_tokens, width);
    KVS_RETURN_IF_ERROR(backend.FillRandom(r, 1 + first, 0.0f, 1.0f));
    KVS_RETURN_IF_ERROR(backend.SealKvGroups(r, r, b, cache));
  }
  return backend.Synchronize();
}

// Decode (one query per sequence) or, with `prefill`, whole-prompt causal attention (every
// context token is a query).
absl::Status BenchAttention(Backend& backend, const ModelConfig& c, bool prefill) {
  const int32_t batch = absl::GetFlag(FLAGS_batch), iters = absl::GetFlag(FLAGS_iters);
  int64_t ctx64 = 4096;
  if (const std::string c = absl::GetFlag(FLAGS_context); !c.empty()) {
    KVS_ASSIGN_OR_RETURN(ctx64, ParseTokenCount(c));
  }
  if (ctx64 > (1 << 30)) return absl::InvalidArgumentError("--context is too large");
  const auto ctx = static_cast<int32_t>(ctx64);
  if (batch < 1 || ctx < 1 || iters < 1) return absl::InvalidArgumentError("--batch, --context and --iters must be >= 1");
  const int32_t bs = absl::GetFlag(FLAGS_block_size);
  const int32_t blocks_per_seq = (ctx + bs - 1) / bs;
  const int32_t num_blocks = batch * blocks_per_seq;
  const DType dt = backend.ComputeDType();
  KVS_ASSIGN_OR_RETURN(const KvDType kv_dtype, KvDTypeFromFlags(backend));
  if (const std::string problem = backend.KvDTypeProblem(kv_dtype, c.head_dim); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("--kv-dtype %s at head_dim %d: %s", KvDTypeName(kv_dtype), c.head_dim,
                                                      problem));
  }
  const int64_t width = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const int64_t slots = static_cast<int64_t>(num_blocks) * bs;
  const PagedKvView layout{nullptr, nullptr, kv_dtype, num_blocks, bs, c.num_kv_heads, c.head_dim};
  KVS_ASSIGN_OR_RETURN(DeviceBuffer k, backend.Allocate(layout.Bytes()));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer v, backend.Allocate(layout.Bytes()));
  PagedKvView cache = layout;
  cache.k = k.data();
  cache.v = v.data();
  const bool channel_quantized = KvChannelQuantized(kv_dtype);
  DeviceBuffer k_ring, v_ring;
  std::vector<int32_t> rings(batch), sealed(batch);
  if (channel_quantized) {
    // int4 / int2: whole blocks sealed from random rows (each block a one-block "sequence" of
    // one step), and each sequence's newest tokens in a bf16 ring of KIVI's default window.
    KVS_RETURN_IF_ERROR(FillSealedBlocks(backend, cache, dt));
    cache.num_residual = batch;
    cache.residual_blocks = (kDefaultKvResidualTokens + bs - 1) / bs + 1;
    const int64_t ring_rows = static_cast<int64_t>(batch) * cache.residual_blocks * bs;
    KVS_ASSIGN_OR_RETURN(k_ring, backend.Allocate(ring_rows * width * 2));
    KVS_ASSIGN_OR_RETURN(v_ring, backend.Allocate(ring_rows * width * 2));
    std::vector<uint16_t> ring_host(ring_rows * width);  // bf16 of N(0, 1) (FillRandom takes the compute dtype)
    std::mt19937 gen(11);
    std::normal_distribution<float> normal;
    for (DeviceBuffer* ring : {&k_ring, &v_ring}) {
      for (uint16_t& x : ring_host) x = FloatToBf16Bits(normal(gen));
      KVS_RETURN_IF_ERROR(backend.CopyToDevice(ring_host.data(), ring->data(), ring_host.size() * 2));
    }
    cache.k_residual = k_ring.data();
    cache.v_residual = v_ring.data();
    std::iota(rings.begin(), rings.end(), 0);
    std::fill(sealed.begin(), sealed.end(), cache.ring().SealedEnd(ctx));
  } else {
    KVS_RETURN_IF_ERROR(FillWrittenSlots(backend, cache, dt, slots));
  }
  const int64_t qw = static_cast<int64_t>(c.num_q_heads) * c.head_dim;
  const int32_t chunk_len = absl::GetFlag(FLAGS_query_len);
  if (chunk_len < 0 || chunk_len > ctx) return absl::InvalidArgumentError("--query-len must be in 0..--context");
  const int32_t q_per_seq = prefill ? (chunk_len > 0 ? chunk_len : ctx) : 1;
  const int64_t tokens = static_cast<int64_t>(batch) * q_per_seq;
  KVS_ASSIGN_OR_RETURN(DeviceBuffer q, backend.Allocate(tokens * qw * DTypeSize(dt)));
  KVS_ASSIGN_OR_RETURN(DeviceBuffer out, backend.Allocate(tokens * qw * DTypeSize(dt)));
  KVS_RETURN_IF_ERROR(backend.FillRandom(q.View(dt, tokens, qw), 3, 0.0f, 1.0f));
  // Shuffled block tables: pages scattered as they are after real churn.
  std::vector<int32_t> table(num_blocks), query_start(batch + 1), context_len(batch, ctx);
  std::iota(table.begin(), table.end(), 0);
  if (absl::GetFlag(FLAGS_shuffle_blocks)) std::shuffle(table.begin(), table.end(), std::mt19937(7));
  for (int32_t i = 0; i <= batch; ++i) query_start[i] = i * q_per_seq;
  KVS_ASSIGN_OR_RETURN(DeviceBuffer meta, backend.Allocate((table.size() + query_start.size() + 3 * batch) * 4));
  int32_t* m = meta.as<int32_t>();
  int32_t* const m_rings = m + table.size() + query_start.size() + batch;
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(table.data(), m, table.size() * 4));
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(query_start.data(), m + table.size(), query_start.size() * 4));
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(context_len.data(), m + table.size() + query_start.size(), context_len.size() * 4));
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(rings.data(), m_rings, batch * 4));
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(sealed.data(), m_rings + batch, batch * 4));
  // Workspace as the engine reserves it (for --max-seqs sequences), so split-K plans match.
  KVS_RETURN_IF_ERROR(backend.ReserveWorkspace(tokens, std::max(batch, absl::GetFlag(FLAGS_max_seqs)), c.num_q_heads,
                                               c.head_dim));
  // The prefill scratch as the engine reserves it for a --context-long --max-model-len.
  KVS_RETURN_IF_ERROR(backend.ReservePrefillKvScratch(kv_dtype, bs, c.num_kv_heads, c.head_dim, ctx));
  AttentionBatch ab;
  ab.num_seqs = batch;
  ab.num_tokens = static_cast<int32_t>(tokens);
  ab.max_blocks_per_seq = blocks_per_seq;
  ab.max_context_len = ctx;
  ab.max_query_len = q_per_seq;
  ab.block_table = m;
  ab.query_start = m + table.size();
  ab.context_len = m + table.size() + query_start.size();
  if (channel_quantized) {
    ab.residual = m_rings;
    ab.sealed = m_rings + batch;
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const TensorView qv = q.View(dt, tokens, qw), ov = out.View(dt, tokens, qw);
  for (int i = 0; i < 3; ++i) KVS_RETURN_IF_ERROR(backend.PagedAttention(qv, cache, ab, scale, ov));
  KVS_RETURN_IF_ERROR(backend.Synchronize());
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) KVS_RETURN_IF_ERROR(backend.PagedAttention(qv, cache, ab, scale, ov));
  KVS_RETURN_IF_ERROR(backend.Synchronize());
  const double per_call = Seconds(t0, Clock::now()) / iters;
  if (prefill) {
    // Causal: each query attends to (position + 1) keys; QK^T and PV are 2 FLOPs per MAC each. The
    // queries are positions ctx - q_per_seq .. ctx - 1.
    const double first = ctx - q_per_seq;
    const double keys = static_cast<double>(ctx) * (ctx + 1) / 2 - first * (first + 1) / 2;
    const double flops = 4.0 * batch * c.num_q_heads * c.head_dim * keys;
    std::printf("| causal prefill attention | %s | Hq=%d Hk=%d D=%d bs=%d KV %s B=%d L=%d Q=%d | %.1f us | %.1f TFLOP/s |\n",
                backend.Name().c_str(), c.num_q_heads, c.num_kv_heads, c.head_dim, bs, KvDTypeName(kv_dtype).data(),
                batch, ctx, q_per_seq, per_call * 1e6, flops / per_call / 1e12);
    return absl::OkStatus();
  }
  // Bytes the kernel must read: every key's and value's codes and scales (int4 / int2: per-channel
  // key scales once per block, the ring's newest tokens in bf16).
  double kv_bytes = 2.0 * batch * ctx * c.num_kv_heads * (layout.RowBytes() + layout.ScaleBytes());
  if (channel_quantized) {
    const int64_t sealed_keys = cache.ring().SealedEnd(ctx), ring_keys = ctx - sealed_keys;
    kv_bytes = static_cast<double>(batch) * c.num_kv_heads *
               (sealed_keys * (2.0 * layout.RowBytes() + layout.ScaleBytes()) +
                static_cast<double>(sealed_keys / bs) * c.head_dim * 4 + ring_keys * 4.0 * c.head_dim);
  }
  std::printf("| paged decode attention | %s | Hq=%d Hk=%d D=%d bs=%d KV %s B=%d L=%d | %.1f us | %.2f TB/s of KV reads | "
              "%.1f G context tokens/s |\n",
              backend.Name().c_str(), c.num_q_heads, c.num_kv_heads, c.head_dim, bs, KvDTypeName(kv_dtype).data(), batch,
              ctx, per_call * 1e6, kv_bytes / per_call / 1e12, static_cast<double>(batch) * ctx / per_call / 1e9);
  return absl::OkStatus();
}

// Drawing one token per row of [batch, vocab] random logits with --temperature/--top-k/--top-p:
// on the backend (SampleRows), and the way it is done without it — the logits copied to the
// host and each row ranked there.
absl::Status BenchSampling(Backend& backend, const ModelConfig& c) {
  const int32_t batch = absl::GetFlag(FLAGS_batch), iters = absl::GetFlag(FLAGS_iters), vocab = c.vocab_size;
  if (batch < 1 || iters < 1) return absl::InvalidArgumentError("--batch and --iters must be >= 1");
  KVS_ASSIGN_OR_RETURN(SamplingParams p, SamplingParamsFromFlags());
  KVS_ASSIGN_OR_RETURN(DeviceBuffer logits, backend.Allocate(static_cast<size_t>(batch) * vocab * sizeof(float)));
  const TensorView lv = logits.View(DType::kF32, batch, vocab);
  KVS_RETURN_IF_ERROR(backend.FillRandom(lv, 5, 0.0f, 8.0f));
  std::vector<SampleRequest> reqs;
  std::mt19937 rng(9);
  for (int32_t r = 0; r < batch; ++r) {
    reqs.push_back({r, p.temperature, p.top_k, p.top_p, std::uniform_real_distribution<float>(0.0f, 1.0f)(rng)});
  }
  KVS_ASSIGN_OR_RETURN(DeviceBuffer dev, backend.Allocate(reqs.size() * (sizeof(SampleRequest) + sizeof(int32_t))));
  auto* dreqs = dev.as<SampleRequest>();
  auto* ids = reinterpret_cast<int32_t*>(dreqs + batch);
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(reqs.data(), dreqs, reqs.size() * sizeof(SampleRequest)));
  std::vector<int32_t> got(batch);
  auto on_backend = [&]() -> absl::Status {
    KVS_RETURN_IF_ERROR(backend.SampleRows(lv, dreqs, batch, ids));
    return backend.CopyToHost(ids, got.data(), batch * sizeof(int32_t));
  };
  std::vector<float> host(static_cast<size_t>(batch) * vocab);
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<int32_t> host_ids(batch);
  auto on_host = [&]() -> absl::Status {
    KVS_RETURN_IF_ERROR(backend.DownloadFloat(lv, host));
    for (int32_t r = 0; r < batch; ++r) {
      host_ids[r] = cpu::SampleToken(std::span<const float>(host.data() + static_cast<size_t>(r) * vocab, vocab),
                                     cpu::SampleOptions{p.temperature, p.top_k, p.top_p}, reqs[r].uniform, scratch);
    }
    return absl::OkStatus();
  };
  auto time = [&](auto&& fn) -> absl::StatusOr<double> {
    KVS_RETURN_IF_ERROR(fn());  // warm-up
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) KVS_RETURN_IF_ERROR(fn());
    return Seconds(t0, Clock::now()) / iters;
  };
  KVS_ASSIGN_OR_RETURN(const double dev_s, time(on_backend));
  KVS_ASSIGN_OR_RETURN(const double host_s, time(on_host));
  const int32_t same = static_cast<int32_t>(std::inner_product(got.begin(), got.end(), host_ids.begin(), 0, std::plus<>(),
                                                               std::equal_to<>()));
  std::printf("| sampling | %s | B=%d V=%d T=%g top_k=%d top_p=%g | on the backend %.1f us | logits to host + host "
              "ranking %.1f us | %d/%d draws identical |\n",
              backend.Name().c_str(), batch, vocab, p.temperature, p.top_k, p.top_p, dev_s * 1e6, host_s * 1e6, same, batch);
  return absl::OkStatus();
}

// A ShareGPT-like mix at a fixed KV budget: how many sequences run at once, how full the
// allocated KV slots are, and the throughput — the figures the paging argument is about.
absl::Status BenchMix(Backend& backend, const ModelWeights& weights, Engine* engine, int tp, int32_t max_model_len) {
  const int32_t n = absl::GetFlag(FLAGS_num_prompts);
  const double scale = absl::GetFlag(FLAGS_length_scale);
  std::mt19937 rng(2024);
  std::uniform_int_distribution<int32_t> tok(0, weights.config().vocab_size - 1);
  auto draw = [&](double mean) { return DrawLogNormalLength(rng, mean * scale); };
  int64_t want_out = 0;
  for (int32_t i = 0; i < n; ++i) {
    Request r;
    r.id = std::to_string(i);
    const int32_t in = std::min(draw(kShareGptMeanPrompt), max_model_len / 2);
    r.prompt_ids.resize(in);
    for (auto& t : r.prompt_ids) t = tok(rng);
    r.params.max_tokens = std::min(draw(kShareGptMeanOutput), max_model_len - in);
    r.params.ignore_eos = true;
    want_out += r.params.max_tokens;
    KVS_RETURN_IF_ERROR(engine->Add(std::move(r)));
  }
  const Scheduler& sched = engine->scheduler();
  const int32_t bs = engine->kv_cache().block_size();
  int64_t steps = 0, seq_sum = 0, max_running = 0;
  double util_sum = 0;
  const auto t0 = Clock::now();
  while (engine->HasWork()) {
    KVS_RETURN_IF_ERROR(engine->Step().status());
    ++steps;
    seq_sum += engine->last_step().num_seqs;
    max_running = std::max<int64_t>(max_running, sched.num_running());
    const int32_t used = sched.pool().num_blocks() - sched.pool().num_free();
    if (used > 0) util_sum += static_cast<double>(sched.TokensInCache()) / (static_cast<double>(used) * bs);
  }
  const double total = Seconds(t0, Clock::now());
  std::printf("| %s | %s tp=%d | %d requests, %lld output tokens | KV %d blocks x %d | max %lld / mean %.1f seqs per step | "
              "KV slots used %.1f%% | %lld preemptions (%lld swapped to host) | %.2f s | %.0f output tok/s |\n",
              absl::GetFlag(FLAGS_static_batching) ? "static batching, full-context reservation" : "paged, continuous",
              backend.Name().c_str(), tp, n, static_cast<long long>(want_out), engine->kv_cache().num_blocks(), bs,
              static_cast<long long>(max_running), static_cast<double>(seq_sum) / std::max<int64_t>(steps, 1),
              100.0 * util_sum / std::max<int64_t>(steps, 1), static_cast<long long>(sched.num_preemptions()),
              static_cast<long long>(sched.num_swap_preemptions()), total, want_out / total);
  return absl::OkStatus();
}

// Runs on a TP group's leader; the group's other ranks follow it as StepWorkers.
absl::Status BenchEngine(Backend& backend, const ModelWeights& weights, Engine* engine, int tp) {
  const int32_t in_len = absl::GetFlag(FLAGS_input_len), out_len = absl::GetFlag(FLAGS_output_len);
  const int32_t n = absl::GetFlag(FLAGS_num_prompts);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(0, weights.config().vocab_size - 1);
  // --temperature / --top-k / --top-p / --seed apply (greedy by default); lengths are fixed.
  KVS_ASSIGN_OR_RETURN(const SamplingParams sampling, SamplingParamsFromFlags());
  auto make = [&](const std::string& id, int32_t len, int32_t out) {
    Request r;
    r.id = id;
    for (int32_t i = 0; i < len; ++i) r.prompt_ids.push_back(tok(rng));
    r.params = sampling;
    r.params.max_tokens = out;
    r.params.ignore_eos = true;
    r.params.stop.clear();
    return r;
  };
  // Warm-up (library initialisation, first-touch), not timed.
  KVS_RETURN_IF_ERROR(engine->Add(make("warmup", std::min(in_len, 64), 4)));
  while (engine->HasWork()) KVS_RETURN_IF_ERROR(engine->Step().status());
  engine->TakeResults();

  for (int32_t i = 0; i < n; ++i) KVS_RETURN_IF_ERROR(engine->Add(make(std::to_string(i), in_len, out_len)));
  double decode_s = 0;
  int64_t decode_steps = 0, decode_tokens = 0, steps = 0;
  const bool profile = absl::GetFlag(FLAGS_profile_decode);
  const auto t0 = Clock::now();
  while (engine->HasWork()) {
    const auto s0 = Clock::now();
    KVS_RETURN_IF_ERROR(engine->Step().status());
    const double dt = Seconds(s0, Clock::now());
    ++steps;
    if (engine->last_step().pure_decode()) {
      decode_s += dt;
      ++decode_steps;
      decode_tokens += engine->last_step().num_seqs;
      // Every prompt is prefilled once a step decodes only: a profiler's range from here holds
      // decode steps alone (a window placed by launch count mixed in prefill chunks' seals).
      if (decode_steps == 1 && profile) SetProfilerRange(true);
    }
  }
  if (profile) SetProfilerRange(false);
  const double total = Seconds(t0, Clock::now());
  const int64_t out_tokens = static_cast<int64_t>(n) * out_len;
  std::printf("| offline %d x (%d in / %d out) | %s tp=%d | max-seqs %d | %.2f s | %.0f output tok/s | %.0f total tok/s |\n", n,
              in_len, out_len, backend.Name().c_str(), tp, absl::GetFlag(FLAGS_max_seqs), total, out_tokens / total,
              (static_cast<double>(n) * (in_len + out_len)) / total);
  if (decode_steps > 0) {
    const double step = decode_s / decode_steps;
    const double batch = static_cast<double>(decode_tokens) / decode_steps;
    // This rank's bytes: its weight shard and its KV heads.
    const double bytes = static_cast<double>(weights.bytes()) +
                         batch * (in_len + out_len / 2.0) * weights.local_config().KvBytesPerToken(static_cast<int>(DTypeSize(weights.dtype())));
    std::printf("| decode steps | tp=%d mean batch %.1f | %lld steps | %.3f ms/step | %.0f tok/s | %.2f TB/s of weight+KV reads per GPU |\n",
                tp, batch, static_cast<long long>(decode_steps), step * 1e3, batch / step, bytes / step / 1e12);
  }
  // First-token times of the batch (all requests arrive at once): the peer of `bench --url --rate 0`.
  std::vector<double> ttft;
  for (const RequestResult& r : engine->TakeResults()) ttft.push_back(r.metrics.ttft_s * 1e3);
  std::printf("| ttft_ms | p50 %.1f | p99 %.1f | max %.1f |\n", Percentile(ttft, 50), Percentile(ttft, 99),
              ttft.empty() ? 0.0 : *std::max_element(ttft.begin(), ttft.end()));
  std::printf("| engine | %lld steps (%lld replayed from CUDA graphs), %lld preemptions, KV cache %d blocks x %d tokens, "
              "%lld offload blocks used |\n",
              static_cast<long long>(steps), static_cast<long long>(engine->graph_replays()),
              static_cast<long long>(engine->scheduler().num_preemptions()), engine->kv_cache().num_blocks(),
              engine->kv_cache().block_size(), static_cast<long long>(engine->scheduler().num_offloaded_blocks()));
  return absl::OkStatus();
}

absl::Status Bench(std::unique_ptr<RankRuntime>& rt) {
#if defined(KVS_HAVE_SERVER)
  if (!absl::GetFlag(FLAGS_url).empty()) return ServingBenchmark();
#endif
  const std::string kernel = absl::GetFlag(FLAGS_kernel);
  if (kernel == "all-reduce") return BenchAllReduce(absl::GetFlag(FLAGS_iters));  // no model
  const std::string model_path = absl::GetFlag(FLAGS_model);
  if (model_path.empty()) return absl::InvalidArgumentError("--model is required (e.g. random:llama-3-8b)");
  if (!kernel.empty()) {
    const bool known = kernel == "attention" || kernel == "prefill" || kernel == "kv-moves" || kernel == "linear" ||
                       kernel == "sample" || kernel == "all-reduce";
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--kernel '%s' is unknown (attention, prefill, linear, sample, kv-moves, all-reduce)", kernel));
    }
    KVS_ASSIGN_OR_RETURN(const WeightQuantization quantize, QuantizeFlag());
    KVS_ASSIGN_OR_RETURN(LoadedModel m, OpenModel(model_path, WeightCheck::kAuto, quantize));
    KVS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, SingleProcessBackend());
    if (kernel == "kv-moves") return BenchKvMoves(*backend, *m.source);
    if (kernel == "linear") return BenchLinear(*backend, *m.source, absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_iters));
    if (kernel == "sample") return BenchSampling(*backend, m.source->config());
    return BenchAttention(*backend, m.source->config(), kernel == "prefill");
  }
  const int32_t in_len = absl::GetFlag(FLAGS_input_len), out_len = absl::GetFlag(FLAGS_output_len);
  if (in_len < 1 || out_len < 1 || absl::GetFlag(FLAGS_num_prompts) < 1) {
    return absl::InvalidArgumentError("--input-len, --output-len and --num-prompts must be >= 1");
  }
  const std::string dataset = absl::GetFlag(FLAGS_dataset);
  if (!dataset.empty() && dataset != "sharegpt-like") {
    return absl::InvalidArgumentError(absl::StrFormat("--dataset '%s' is unknown (sharegpt-like)", dataset));
  }
  if (!(absl::GetFlag(FLAGS_length_scale) > 0)) return absl::InvalidArgumentError("--length-scale must be > 0");
  int32_t max_model_len = 0;
  KVS_ASSIGN_OR_RETURN(rt, StartRank(model_path, [&](EngineConfig& c, const ModelConfig& mc) {
                         if (c.scheduler.max_model_len == 0)
                           c.scheduler.max_model_len =
                               std::min(mc.MaxContext(), dataset.empty() ? in_len + out_len + 16 : 2048);
                         c.scheduler.static_batching = absl::GetFlag(FLAGS_static_batching);
                         max_model_len = c.scheduler.max_model_len;
                       }));
  if (rt->worker) return RunWorker(*rt);
  if (rt->world.rank != 0) return rt->engine->Shutdown();  // data parallel: bench one group
  if (!dataset.empty()) {
    KVS_RETURN_IF_ERROR(BenchMix(*rt->backend, *rt->weights, rt->engine.get(), rt->context->layout().tp, max_model_len));
    return rt->engine->Shutdown();
  }
  KVS_RETURN_IF_ERROR(BenchEngine(*rt->backend, *rt->weights, rt->engine.get(), rt->context->layout().tp));
  return rt->engine->Shutdown();
}

}  // namespace

int RunBench() {
  std::unique_ptr<RankRuntime> rt;  // outlives Bench: see Generate
  return FinishRank("bench", Bench(rt));
}

}  // namespace kvs
