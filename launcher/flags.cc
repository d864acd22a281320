#include "launcher/flags.h"

#include "absl/flags/flag.h"
#include "runtime/engine/engine_config.h"
#include "runtime/sched/scheduler.h"

ABSL_FLAG(std::string, model, "", "Model: a .gguf file or a Hugging Face checkpoint directory");
ABSL_FLAG(std::string, check_weights, "auto",
          "Scan GGUF weights for NaN/Inf at load: auto (files up to 4 GiB), on, off");
ABSL_FLAG(std::string, quantize, "none",
          "Quantize the model's float projection matrices at load: none, or fp8 (E4M3 codes, a scale per 128 "
          "columns; kept in 8 bits on the GPU, decoded on the CPU). Embedding and LM head stay as stored");
ABSL_FLAG(std::string, prompt, "", "Prompt text (generate)");
ABSL_FLAG(bool, chat, false, "Wrap the prompt in the model's chat template");
ABSL_FLAG(std::string, system, "", "System message for --chat (default: the template's own)");
ABSL_FLAG(std::string, input, "", "JSONL file of requests (batch generate)");
ABSL_FLAG(std::string, output, "", "JSONL file for results (batch generate); answers go to <output>.journal as they finish");
ABSL_FLAG(bool, resume, false,
          "generate --input: continue an interrupted batch, skipping the lines its <output>.journal answers");
ABSL_FLAG(bool, strict, false,
          "generate --input: any invalid line fails the whole batch before it starts (default: it gets an error record)");
ABSL_FLAG(int32_t, max_tokens, 128, "Most tokens to generate per request");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 is greedy");
ABSL_FLAG(int32_t, top_k, 0, "Sample among the k most likely tokens; 0 is off");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "Random seed for sampling");
ABSL_FLAG(std::vector<std::string>, stop, {}, "Comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past end-of-sequence tokens");
ABSL_FLAG(int32_t, block_size, kvs::kDefaultBlockSize, "Tokens per KV cache block");
ABSL_FLAG(int32_t, max_seqs, kvs::kDefaultMaxSeqs, "Most sequences in one step");
ABSL_FLAG(int32_t, max_tokens_per_step, kvs::kDefaultMaxTokensPerStep,
          "Token budget of one step (prefill chunks + decodes)");
ABSL_FLAG(int32_t, max_model_len, 0, "Context limit per sequence; 0 takes the model's");
ABSL_FLAG(std::string, kv_cache_memory, "", "KV cache size, e.g. 512MiB or 4GiB; default: 1GiB on the CPU backend");
ABSL_FLAG(std::string, kv_dtype, "",
          "KV cache element format: f32 (CPU), bf16, fp16, fp8, int8, int4, int2 (keys per channel, values per "
          "token, the newest tokens in bf16) or int4-token (int4 per token); default: the "
          "backend's compute dtype (f32 on CPU, bf16 on CUDA; `plan` assumes bf16)");
ABSL_FLAG(int32_t, kv_residual_tokens, kvs::kDefaultKvResidualTokens,
          "With --kv-dtype int4 / int2: each sequence's newest tokens kept in bf16 (KIVI's full-precision window), "
          "rounded up to whole blocks and to at most the smallest sliding window; 0 seals each block when whole");
ABSL_FLAG(bool, kv_sink, true,
          "With --kv-dtype int4 / int2 and a --kv-residual-tokens window: each sequence's first block kept in bf16 "
          "too (the attention sink; a sequence resumed from sealed blocks reads its sealed copy); false to measure "
          "without");
ABSL_FLAG(std::string, device, "auto",
          "Backend: cpu (weights kept in their GGUF blocks, int8 dot products), cpu-reference (the float32 "
          "oracle), cuda, or auto (cuda when a GPU is visible, else cpu)");
ABSL_FLAG(int32_t, threads, 0,
          "Threads per rank for the CPU backend's kernels; 0: the cores this process may use divided by the ranks "
          "on its node (env KVS_THREADS sets that default)");
ABSL_FLAG(bool, verbose, false, "Print load and timing details to stderr");
ABSL_FLAG(std::string, context, "",
          "Tokens per sequence (K = 1024, M = 1024^2): bench --kernel attention (default 4096), plan (default the model's)");
ABSL_FLAG(double, memory_fraction, 0.9, "Share of the memory left after weights and workspace that the KV cache takes");
ABSL_FLAG(std::string, swap_space, "",
          "Host memory per rank for KV blocks swapped out under preemption, e.g. 4GiB; default 4GiB on a GPU, 0 on the CPU");
ABSL_FLAG(std::string, kv_offload_memory, "",
          "Host memory per rank that extends the KV cache for a sequence longer than the device holds, e.g. 32GiB: "
          "attention reads those blocks in place over the host link (slow; default 0: such requests are refused)");
ABSL_FLAG(std::string, preemption_mode, "auto",
          "How preempted sequences give up their KV: swap, recompute, or auto (the cost measured at start-up decides)");
ABSL_FLAG(bool, enable_prefix_caching, true,
          "Reuse the KV of full blocks whose whole prefix was computed before (--enable-prefix-caching=false: off)");
ABSL_FLAG(bool, enforce_eager, false,
          "Run every decode step op by op instead of replaying recorded CUDA graphs (debugging, profiling)");
ABSL_FLAG(bool, overlap_kv_moves, true,
          "Move KV blocks (swaps, copy-on-write, offload) on their own stream beside the forward pass, each layer "
          "waiting only for its own blocks; false: every step waits for its moves first (for comparison)");
ABSL_FLAG(int32_t, tp, 1, "Tensor-parallel ranks per model replica; the job's ranks (mpirun -np / srun -n) are dp x tp");
ABSL_FLAG(std::string, all_reduce, "auto",
          "Tensor-parallel all-reduce on GPUs: auto (time NCCL and kvshard's peer-memory all-reduce at start-up, take "
          "the faster per message size), nccl, or custom (the peer-memory one: GPUs of one node, up to 8 ranks)");
ABSL_FLAG(std::string, dp_routing, "kv",
          "With several model replicas (mpirun -np > --tp): kv sends each request to the replica that already holds "
          "its prompt's prefix, else to the one with the most free KV; round-robin takes them in turn (a baseline)");
ABSL_FLAG(double, comm_timeout, 120.0,
          "Seconds a collective may wait for the other ranks before the job is stopped with an error naming it");

namespace kvs {

absl::StatusOr<WeightQuantization> QuantizeFlag() { return ParseWeightQuantization(absl::GetFlag(FLAGS_quantize)); }

absl::StatusOr<WeightCheck> WeightCheckFlag() {
  const std::string v = absl::GetFlag(FLAGS_check_weights);
  if (v == "auto") return WeightCheck::kAuto;
  if (v == "on" || v == "true") return WeightCheck::kOn;
  if (v == "off" || v == "false") return WeightCheck::kOff;
  return absl::InvalidArgumentError("--check-weights " + v + " is not one of auto, on, off");
}

}  // namespace kvs
