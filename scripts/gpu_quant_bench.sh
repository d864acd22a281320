#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): weights kept in GGML blocks on the GPU. Builds, runs
# the block-weight tests, then the decode step on Llama-3-8B's shape with bf16 weights and with
# random weights in each block type (random:<preset>:<type>), beside the copy ceiling, in one call:
# batch 1 for every type, batches 8 and 32 (the GEMV's widest and the bf16 tiles) for the first.
# Usage: bash scripts/gpu_quant_bench.sh [TYPES...]   (default: Q4_K Q4_0 Q6_K Q8_0)
source "$(dirname "$0")/gpu_common.sh"
TYPES=${*:-Q4_K Q4_0 Q6_K Q8_0}
gpu_build
gpu_tests block_linear_test cuda_backend_test gpu_model_test
gpu_copy_ceiling | tee "$OUT/ceiling.txt"
run() {  # spec batch
  echo "## $1 batch $2"
  $K bench --device cuda --model $1 --input-len 512 --output-len 128 --num-prompts $2 --max-seqs $2 2>&1 | grep -E "^\|"
}
{
  first=${TYPES%% *}
  for b in 1 8 32; do run random:llama-3-8b $b; run random:llama-3-8b:$first $b; done
  for t in ${TYPES#* }; do run random:llama-3-8b:$t 1; done
} 2>&1 | tee "$OUT/quant_bench.txt"
echo "total $(( $(date +%s) - start )) s"
