#!/usr/bin/env bash
# The tenth session's second device call (2026-12-05): the int4/int2 seal kernel parallelised over
# warps (kivi_kv_test holds its bytes to the CPU encoder's), the int4 decode step at the default
# 512-token budget beside bf16 (it was 12.04 against 7.58 ms on an H100, sealing ~100 us a layer),
# the FP8 GEMM checked at k = 1536 (block_linear_test; cuBLASLt refused k = 384), the F8_E4M3 step at
# batch 32 with what cuBLASLt took, then Nsight Compute on the Hopper prefill kernel on bf16, fp8
# and int8 KV (issue 20's missing profile). One build.
# Usage: bash scripts/gpu_seal_f8_checks.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests kivi_kv_test block_linear_test
grep -hE "GEMMs on FP8" "$OUT"/block_linear_test.log
for kv in bf16 int4 int2; do
  echo "## $kv KV, batch 32, budget 512"
  timeout 120 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 32 \
    --max-seqs 32 --kv-dtype $kv 2>&1 | grep -E "^\| decode|rror"
done
for spec in random:llama-3-8b:F8_E4M3; do
  echo "## $spec, batch 32"
  timeout 120 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 32 --max-seqs 32 \
    2>&1 | grep -E "^\| decode|rror|cuBLASLt" | sort | uniq -c | head
done
echo "steps done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_profile.sh" wgmma-codes
echo "total $(( $(date +%s) - start )) s"
