#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): weights kept in GGML blocks on the GPU. Builds, runs
# the block-weight tests, then the decode step on Llama-3-8B's shape with bf16 weights and with
# random weights in each block type (random:<preset>:<type>), beside the copy ceiling, in one call.
# Usage: bash scripts/gpu_quant_bench.sh [TYPES...]   (default: Q8_0 Q4_0 Q4_K Q6_K)
source "$(dirname "$0")/gpu_common.sh"
TYPES=${*:-Q8_0 Q4_0 Q4_K Q6_K}
gpu_build
gpu_tests block_linear_test cuda_backend_test gpu_model_test
gpu_copy_ceiling | tee "$OUT/ceiling.txt"
{
  for spec in random:llama-3-8b $(for t in $TYPES; do echo random:llama-3-8b:$t; done); do
    echo "## $spec"
    $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 1 2>&1 | grep -E "^\||weights"
    $K bench --device cuda --model $spec --input-len 512 --output-len 64 --num-prompts 32 --max-seqs 32 2>&1 | grep -E "^\|"
  done
} 2>&1 | tee "$OUT/quant_bench.txt"
echo "total $(( $(date +%s) - start )) s"
