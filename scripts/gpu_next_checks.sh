#!/usr/bin/env bash
# The next session's first device call (written 2026-12-05, eleventh session, when no device time
# was left): int4/int2 (KIVI) prefill decoded first for the Hopper kernel (kivi_decoded_first.cu,
# opt-in: KVS_KIVI_PREFILL=decoded) against the CPU in kivi_kv_test and timed beside the CUDA-core
# KIVI kernel and bf16 at 16K; the prefill test's fp16-values reference replayed on the seed that
# had missed (3771173526); the F8 and decoded-first tests again. One build.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests kivi_kv_test prefill_attention_test block_linear_test
grep -E "worst element" "$OUT/kivi_kv_test.log" | head -12
KVS_TEST_SEED=3771173526 timeout 100 "$BUILD"/tests/prefill_attention_test --gtest_filter='*bs16_0' 2>&1 \
  | grep -E "OK \]|FAILED \]" | head -3
bench() {  # label, then flags
  local label=$1; shift
  timeout 120 $K bench --device cuda --kernel prefill --batch 1 --model random:llama-3-8b "$@" 2>&1 \
    | sed "s/^| causal prefill attention | cuda:0 ([^)]*)/| $label/" | grep -E "^\||rror"
}
for L in 4096 16384; do
  bench "bf16" --context $L --iters 5
  for kv in int4 int2; do
    bench "$kv CUDA cores" --context $L --kv-dtype $kv --iters 3
    KVS_KIVI_PREFILL=decoded bench "$kv decoded first" --context $L --kv-dtype $kv --iters 5
  done
done
echo "total $(( $(date +%s) - start )) s"
