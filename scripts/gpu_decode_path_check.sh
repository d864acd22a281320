#!/usr/bin/env bash
# Issue 21, item 4, in one call: the batch-1 decode path after split rows, the F8 GEMV's 16-byte
# pieces and programmatic dependent launch. Builds; runs the element-wise GPU tests of every path
# that reads kept weights (block_linear_test: GEMV, block GEMM, tiles, embedding, every GGML type;
# gpu_model_test; the backend's); then the copy ceiling and batch-1 steps of each weight format,
# with and without PDL (KVS_PDL=off) for bf16 and Q4_0. About 5 minutes on an H200.
# Usage: bash scripts/gpu_decode_path_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests block_linear_test gpu_model_test cuda_backend_test cuda_sampling_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in "" :F8_E4M3 :Q8_0 :Q4_0 :Q4_K; do gpu_step "random:llama-3-8b$t" 1 --model random:llama-3-8b$t; done
for t in "" :Q4_0; do KVS_PDL=off gpu_step "random:llama-3-8b$t, KVS_PDL=off" 1 --model random:llama-3-8b$t; done
echo "steps done at $(( $(date +%s) - start )) s"
# Layer 0 + LM head per matrix (weight bytes over time), one token.
for t in :Q4_0 :Q4_K :F8_E4M3; do
  echo "## linear, random:llama-3-8b$t"
  timeout 60 $K bench --device cuda --model random:llama-3-8b$t --kernel linear --batch 1 --iters 20 2>&1 | grep -E "^\|" | head -12
done
echo "total $(( $(date +%s) - start )) s"
