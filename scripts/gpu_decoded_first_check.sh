#!/usr/bin/env bash
# Quantized-cache prefill decoded first (prefill_decoded_first.cuh) against the producer warps'
# in-kernel decode and bf16, with torch SDPA in the same call: the element-wise test (every
# format, all four ways), the 4K / 16K kernels, a 2K chunk over a 62K prefix, and the 65,536-token
# prompt's time to first token with bf16 and int8 KV. One build. (device tool, carrying .deps)
# Usage: bash scripts/gpu_decoded_first_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests prefill_attention_test cuda_kv_format_test
grep -E "^prefill .*(decoded|wgmma )" "$OUT/prefill_attention_test.log" | awk '{print $2, $3, $4, $5, $(NF-3)}' | sort | uniq -c | head -20
gpu_sdpa_ceiling
bench() {  # label, then flags
  local label=$1; shift
  $K bench --device cuda --kernel prefill --batch 1 --model random:llama-3-8b "$@" 2>&1 \
    | sed "s/^| causal prefill attention | cuda:0 ([^)]*)/| $label/" | grep -E "^\||rror"
}
for L in 4096 16384; do
  bench "bf16" --context $L --iters 5
  for kv in fp8 int8 int4-token; do
    bench "$kv auto" --context $L --kv-dtype $kv --iters 5
    KVS_WGMMA_CODES=staged bench "$kv staged" --context $L --kv-dtype $kv --iters 5
  done
done
bench "bf16 chunk" --context 65536 --query-len 2048 --iters 5
for kv in fp8 int8; do
  bench "$kv chunk auto" --context 65536 --query-len 2048 --kv-dtype $kv --iters 5
  KVS_WGMMA_CODES=staged bench "$kv chunk staged" --context 65536 --query-len 2048 --kv-dtype $kv --iters 5
done
echo "kernels done at $(( $(date +%s) - start )) s"
for kv in bf16 int8; do
  echo "== $kv KV: 65,536-token prompt"
  gpu_long_prompt 8192 --kv-dtype $kv
done
echo "total $(( $(date +%s) - start )) s"
