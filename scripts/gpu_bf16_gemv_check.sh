#!/usr/bin/env bash
# The bf16 decode GEMV (kernels/cuda/bf16_gemv.cu) against cuBLAS, which it replaces at 1 to
# kBf16GemvMaxTokens tokens, in one call: cuda_backend_test (every Linear shape both ways against
# the CPU, element by element) and gpu_model_test, the copy ceiling, layer 0's matrices + the LM
# head at 1, 2, 4 and 8 tokens both ways (`bench --kernel linear`, eager), the batch-1 steps of bf16
# and of F8_E4M3 (whose LM head is bf16) both ways, bf16 at batch 4 and 8 both ways, then the
# kernel timeline of the graphed bf16 step. About 6 minutes from a cold machine.
# Usage: bash scripts/gpu_bf16_gemv_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test gpu_model_test
grep -E "^Linear .*gemv" "$OUT/cuda_backend_test.log" | head -24
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in 1 2 4 8; do
  for choice in gemv cublas; do
    echo "## linear T=$t, $choice"
    KVS_BF16_GEMV=$choice timeout 120 $K bench --device cuda --model random:llama-3-8b --kernel linear --batch $t \
      --iters 50 2>&1 | grep -E "^\| linear|rror" | { [ "$t" = 1 ] && cat || grep "all of layer"; }
  done
done
for m in "" :F8_E4M3; do
  for choice in gemv cublas; do
    KVS_BF16_GEMV=$choice gpu_step "random:llama-3-8b$m, $choice" 1 --model random:llama-3-8b$m
  done
done
for n in 4 8; do
  for choice in gemv cublas; do KVS_BF16_GEMV=$choice gpu_step "random:llama-3-8b, $choice" $n --model random:llama-3-8b; done
done
echo "steps done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_timeline.sh" random:llama-3-8b
