#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): prefill attention, Hopper's warpgroup-MMA kernel
# against the mma.sync kernel and torch SDPA on the same shapes, in one call. Builds, runs the
# element-wise prefill test and the CUDA regression tests, then the benchmark table.
# Usage: bash scripts/gpu_prefill_bench.sh [quick]
source "$(dirname "$0")/gpu_common.sh"
MODE=${1:-full}
gpu_build
gpu_tests prefill_attention_test
grep -E "^prefill " "$OUT/prefill_attention_test.log" | sort | uniq | head -24
[ "$MODE" = quick ] || gpu_tests cuda_backend_test cuda_kv_format_test gpu_model_test

# torch SDPA, causal, B=1: the ceiling of the table. Llama-3-8B heads (32 q / 8 KV, d128) at 4K and
# 16K, and SmolLM2's (9 q / 3 KV, d64) at 16K for the head_dim-64 row.
gpu_sdpa_ceiling | tee "$OUT/sdpa.txt"

{
  bench() {  # label, then bench flags; KVS_* settings come from the caller's environment
    local label=$1; shift
    $K bench --device cuda --kernel prefill --batch 1 "$@" | sed "s/^| causal prefill attention | cuda:0 ([^)]*)/| $label/"
  }
  L8=(--model random:llama-3-8b)
  for L in 4096 16384; do
    KVS_PREFILL_KERNEL=mma bench "mma" "${L8[@]}" --context $L --iters 5
    for kv in bf16 fp16 fp8 int8 int4-token; do
      bench "wgmma" "${L8[@]}" --context $L --kv-dtype $kv --iters 5
    done
    KVS_WGMMA_PINGPONG=1 bench "wgmma pingpong" "${L8[@]}" --context $L --iters 5
  done
  # A 2K-token chunk over a 62K-token prefix, and the 64K prompt in one piece.
  for kern in mma auto; do
    KVS_PREFILL_KERNEL=$kern bench "$kern" "${L8[@]}" --context 65536 --query-len 2048 --iters 5
  done
  bench "wgmma" "${L8[@]}" --context 65536 --iters 2
  # head_dim 64 (SmolLM2's 9 q / 3 KV heads).
  bench "wgmma" --model random:smollm2-135m --context 16384 --iters 5
  KVS_WGMMA_PINGPONG=1 bench "wgmma pingpong" --model random:smollm2-135m --context 16384 --iters 5
} 2>&1 | tee "$OUT/prefill_bench.txt" | grep "^|"

if [ "$MODE" != quick ]; then
  # End to end: a 65,536-token prompt's time to first token, both kernels.
  for kern in auto; do
    echo "== $kern: 65,536-token prompt"
    KVS_PREFILL_KERNEL=$kern gpu_long_prompt 8192
  done | tee "$OUT/ttft64k.txt"
fi
echo "total $(( $(date +%s) - start )) s"
