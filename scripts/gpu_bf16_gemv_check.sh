#!/usr/bin/env bash
# The bf16 decode GEMV (kernels/cuda/bf16_gemv.cu) against cuBLAS, which it replaces at one token
# (kBf16GemvMaxTokens), in one call: cuda_backend_test (every Linear shape both ways against the
# CPU, element by element) and gpu_model_test, the copy ceiling, layer 0's matrices + the LM head
# at one token (`bench --kernel linear`, eager) with each row split forced (KVS_BF16_GEMV_WARPS),
# the default and cuBLAS, the batch-1 steps of bf16 and F8_E4M3 (whose LM head is bf16) both ways,
# then the kernel timeline of the graphed bf16 step. About 5 minutes from a cold machine.
# (The 2-token figures in docs/performance.md came from this script at 40dd0b8, which took 2.)
# Usage: bash scripts/gpu_bf16_gemv_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test gpu_model_test
grep -E "^Linear 1x" "$OUT/cuda_backend_test.log" | head -40
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for choice in default 1 4 16 cublas; do
  echo "## linear T=1, $choice"
  env KVS_BF16_GEMV_WARPS=$choice KVS_BF16_GEMV=$choice timeout 120 $K bench --device cuda --model random:llama-3-8b \
    --kernel linear --batch 1 --iters 50 2>&1 | grep -E "^\| linear|rror" | cut -d'|' -f4,6,7
done
for m in "" :F8_E4M3; do
  for choice in gemv cublas; do
    KVS_BF16_GEMV=$choice gpu_step "random:llama-3-8b$m, $choice" 1 --model random:llama-3-8b$m
  done
done
echo "steps done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_timeline.sh" random:llama-3-8b
