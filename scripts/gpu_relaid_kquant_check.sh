#!/usr/bin/env bash
# Q4_K and Q5_K split rows re-laid per unit (ggml_unit.cuh's RelayUnits) on one GPU, in one call:
# the tests that read kept blocks (every GGML type's GEMV, block GEMM, bf16 tiles and embedding
# against the CPU decoder; the model test), the copy ceiling, layer 0 + LM head at 1 and 32 tokens
# and the batch-1 steps of Q4_K and of Q4_0 (unchanged: the machine's control). ~4 minutes cold.
# Usage: bash scripts/gpu_relaid_kquant_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests block_linear_test cuda_backend_test activation_rounding_test gpu_model_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in 1 32; do
  timeout 60 $K bench --device cuda --model random:llama-3-8b:Q4_K --kernel linear --batch $t --iters 50 2>&1 \
    | grep -E "^\| linear|rror" | cut -d'|' -f4-7
done
for m in :Q4_K :Q4_0; do gpu_step "random:llama-3-8b$m" 1 --model random:llama-3-8b$m; done
echo "total $(( $(date +%s) - start )) s"
