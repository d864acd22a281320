#!/usr/bin/env bash
# The next session's first device call (written 2026-12-05, ninth session, when no device time was
# left): the two tests whose rules were corrected from the H200 run without a re-run, the F8_E4M3
# step beyond 8 tokens now that a refused cuBLASLt shape skips its wasted operand pass, then
# scripts/gpu_int4_step_check.sh's comparison of the int4-KV step. One build.
# Usage: bash scripts/gpu_next_checks.sh   (carry .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
# Whether cuBLASLt takes block scale modes once their pointers are set (F8Gemm now sets them before
# asking); if it does, block_linear_test below checks the FP8 GEMM's numbers for the first time.
nvcc -std=c++17 -o /tmp/probe scripts/probe_cublaslt_fp8.cu -lcublasLt -lcublas && /tmp/probe > "$OUT/probe.txt" 2>&1
grep -iE "^cuBLASLt|success, [1-9]" "$OUT/probe.txt" | grep -v "SCALAR_32F      B SCALAR" | head -20
gpu_tests block_linear_test gpu_model_test
grep -hE "GEMMs on FP8|GPU vs CPU" "$OUT"/block_linear_test.log "$OUT"/gpu_model_test.log | head -24
for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3 random:llama-3-8b:Q4_K; do
  echo "## $spec, batch 32"
  timeout 120 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 32 --max-seqs 32 \
    2>&1 | grep -E "^\| decode|rror"
done
echo "weights done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_int4_step_check.sh"
