#!/usr/bin/env bash
# Issues 20 and 21's targets in one call, on main's defaults (meant for an H200, where the targets
# are stated; the device line of the build says which card ran it):
#   issue 20    prefill_attention_test; torch SDPA beside the Hopper prefill at 4K / 16K (bf16),
#               fp8 KV at 4K / 16K, int8 at 16K and a 2K chunk over a 62K prefix; then the
#               65,536-token prompt's time to first token
#   issue 21    the copy ceiling, then batch-1 steps (512 in / 128 out, one request) for bf16,
#               F8_E4M3, Q4_0 and Q4_K weights of the Llama-3-8B shape, two rounds alternating
#   tests       block_linear_test and gpu_model_test (main's decode defaults together)
# In order of what matters if the call runs out of time; the log is also $OUT/targets.txt.
# KVS_TARGETS_QUICK=1: issue 20's part alone (one round of the prefill benches).
# KVS_TARGETS_NO_TESTS=1: no tests (for a commit whose tests passed on another sm_90 card).
# Usage (device tool, carrying .deps): bash scripts/gpu_targets_check.sh
source "$(dirname "$0")/gpu_common.sh"
exec > >(tee "$OUT/targets.txt") 2>&1
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
[ -n "${KVS_TARGETS_NO_TESTS:-}" ] || gpu_tests prefill_attention_test
gpu_sdpa_ceiling
prefill() {  # label, then bench flags
  local label=$1; shift
  echo "## prefill, $label"
  timeout 60 $K bench --device cuda --kernel prefill --batch 1 --model random:llama-3-8b "$@" 2>&1 | grep -E "^\||rror"
}
rounds=2
[ -z "${KVS_TARGETS_QUICK:-}" ] || rounds=1
for round in $(seq $rounds); do
  prefill "4K bf16" --context 4096 --iters 10
  prefill "4K fp8" --context 4096 --kv-dtype fp8 --iters 10
  prefill "16K bf16" --context 16384 --iters 5
  prefill "16K fp8" --context 16384 --kv-dtype fp8 --iters 5
done
prefill "16K int8" --context 16384 --kv-dtype int8 --iters 5
prefill "2K chunk over 62K" --context 65536 --query-len 2048 --iters 5
echo "== 65,536-token prompt"
gpu_long_prompt 8192
echo "prefill done at $(( $(date +%s) - start )) s"
[ -z "${KVS_TARGETS_QUICK:-}" ] || exit 0
gpu_copy_ceiling
for round in 1 2; do
  for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3 random:llama-3-8b:Q4_0 random:llama-3-8b:Q4_K; do
    gpu_step "$spec (round $round)" 1 --model $spec
  done
done
echo "steps done at $(( $(date +%s) - start )) s"
[ -n "${KVS_TARGETS_NO_TESTS:-}" ] || gpu_tests block_linear_test gpu_model_test
echo "total $(( $(date +%s) - start )) s"
