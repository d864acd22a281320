#!/usr/bin/env bash
# The block GEMM split along k (block_gemm.cu, 2026-12-05 twelfth session): its tests, then beside
# the copy ceiling in one call `bench --kernel linear` (layer 0's matrices and the LM head) and whole
# decode steps at batch 32, the block GEMM (now the default for 9-128 tokens) against the bf16 tiles
# (KVS_BLOCK_GEMM=bf16-tiles); last, the F16 peer file of gpu_llamacpp_bench.sh's first call.
# Usage: bash scripts/gpu_block_gemm_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests block_linear_test gpu_model_test
gpu_copy_ceiling
for spec in random:llama-3-8b:Q4_0 random:llama-3-8b:Q4_K random:llama-3-8b:Q8_0; do
  for b in 32 128; do
    for mode in default bf16-tiles; do
      echo "## $spec, $b tokens, $mode"
      KVS_BLOCK_GEMM=$mode timeout 90 $K bench --device cuda --model $spec --kernel linear --batch $b --iters 20 \
        2>&1 | grep -E "q_proj|down_proj|lm_head|embed_tokens|all of|rror" \
        | sed -E 's/^\| linear \| [^|]*\| (model\.layers\.0\.)?//; s/ of weight reads//'
    done
  done
done
step() {  # label, batch, bench flags
  local label=$1 n=$2; shift 2
  echo "## $label, batch $n"
  timeout 150 $K bench --device cuda --input-len 512 --output-len 128 --num-prompts $n --max-seqs $n "$@" 2>&1 \
    | grep -E "^\| decode|rror" | head -3
}
step "bf16" 32 --model random:llama-3-8b
for t in Q4_0 Q4_K Q8_0; do
  step "$t block GEMM" 32 --model random:llama-3-8b:$t
  KVS_BLOCK_GEMM=bf16-tiles step "$t bf16 tiles" 32 --model random:llama-3-8b:$t
done
echo "total $(( $(date +%s) - start )) s"
