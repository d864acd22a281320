#!/usr/bin/env bash
# The bf16 decode GEMV (kernels/cuda/bf16_gemv.cu) against cuBLAS, which it replaces at 1 and 2
# tokens, in one call: cuda_backend_test (every Linear shape both ways against the CPU, element by
# element) and gpu_model_test, the copy ceiling, layer 0's matrices + the LM head at 1 and 2
# tokens (`bench --kernel linear`, eager) with each row split forced (KVS_BF16_GEMV_WARPS), the
# default and cuBLAS, then the steps of bf16 at batch 1 and 2 and of F8_E4M3 (whose LM head is
# bf16) at batch 1 both ways, and the kernel timeline of the graphed bf16 step. ~6 minutes cold.
# Usage: bash scripts/gpu_bf16_gemv_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test gpu_model_test
grep -E "^Linear .*gemv" "$OUT/cuda_backend_test.log" | head -40
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in 1 2; do
  for choice in default 1 4 16 cublas; do
    echo "## linear T=$t, $choice"
    env KVS_BF16_GEMV_WARPS=$choice KVS_BF16_GEMV=$choice timeout 120 $K bench --device cuda --model random:llama-3-8b \
      --kernel linear --batch $t --iters 50 2>&1 | grep -E "^\| linear|rror" | cut -d'|' -f4,6,7
  done
done
for n in 1 2; do
  for choice in gemv cublas; do KVS_BF16_GEMV=$choice gpu_step "random:llama-3-8b, $choice" $n --model random:llama-3-8b; done
done
for choice in gemv cublas; do
  KVS_BF16_GEMV=$choice gpu_step "random:llama-3-8b:F8_E4M3, $choice" 1 --model random:llama-3-8b:F8_E4M3
done
echo "steps done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_timeline.sh" random:llama-3-8b
