#!/usr/bin/env bash
# The block GEMM (block_gemm.cu): its tests, then beside the copy ceiling in one call `bench --kernel
# linear` (layer 0's matrices and the LM head) at 32 and 128 tokens and whole decode steps at batch
# 32, the pipelined block GEMM (the default for 9-32 tokens but on Q8_0) against the one-stage one
# (KVS_BLOCK_GEMM_PIPELINE=off) and the bf16 tiles (KVS_BLOCK_GEMM=bf16-tiles); at 128 tokens the
# block GEMM is forced (int8-mma).
# Usage: bash scripts/gpu_block_gemm_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests block_linear_test gpu_model_test
gpu_copy_ceiling
linear() {  # label, then bench flags
  local label=$1; shift
  echo "## $label"
  timeout 90 $K bench --device cuda --kernel linear --iters 20 "$@" 2>&1 \
    | grep -E "q_proj|down_proj|lm_head|embed_tokens|all of|rror" \
    | sed -E 's/^\| linear \| [^|]*\| (model\.layers\.0\.)?//; s/ of weight reads//'
}
for t in Q4_0 Q4_K Q8_0; do
  m=random:llama-3-8b:$t
  KVS_BLOCK_GEMM_PIPELINE=off linear "$t, 32 tokens, block GEMM" --model $m --batch 32
  linear "$t, 32 tokens, default (pipelined but Q8_0)" --model $m --batch 32
  KVS_BLOCK_GEMM=bf16-tiles linear "$t, 32 tokens, bf16 tiles" --model $m --batch 32
  KVS_BLOCK_GEMM=int8-mma linear "$t, 128 tokens, block GEMM" --model $m --batch 128
  KVS_BLOCK_GEMM=bf16-tiles linear "$t, 128 tokens, bf16 tiles" --model $m --batch 128
done
gpu_step "bf16" 32 --model random:llama-3-8b
for t in Q4_0 Q4_K Q8_0; do
  KVS_BLOCK_GEMM_PIPELINE=off gpu_step "$t block GEMM" 32 --model random:llama-3-8b:$t
  gpu_step "$t default (pipelined but Q8_0)" 32 --model random:llama-3-8b:$t
  KVS_BLOCK_GEMM=bf16-tiles gpu_step "$t bf16 tiles" 32 --model random:llama-3-8b:$t
done
echo "total $(( $(date +%s) - start )) s"
