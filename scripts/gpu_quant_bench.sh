#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): weights kept in GGML blocks on the GPU. Builds, runs
# the block-weight tests, then, beside the copy ceiling in one call: `bench --kernel linear` (layer
# 0's matrices and the LM head of Llama-3-8B's shape, random weights in each block type:
# random:<preset>:<type>) at 1 and 8 tokens (the block GEMV), 32 and 128 (the block GEMM, and the bf16
# tiles it replaced); an Nsight Compute
# profile of the GEMV on the gate projection (the first type, 1 token); the whole decode step at
# batch 1, and at batch 32 for bf16 and the first type. F8_E4M3 is kvshard's FP8 weights; with it,
# the FP8 tensor-core GEMM against the bf16 tiles at 32, 512 and 4,096 tokens.
# Usage: bash scripts/gpu_quant_bench.sh [TYPES...]   (default: Q4_K Q4_0 Q6_K Q8_0)
source "$(dirname "$0")/gpu_common.sh"
TYPES=${*:-Q4_K Q4_0 Q6_K Q8_0}
gpu_build
gpu_tests block_linear_test cuda_backend_test gpu_model_test
gpu_copy_ceiling | tee "$OUT/ceiling.txt"
{
  for spec in random:llama-3-8b $(for t in $TYPES; do echo random:llama-3-8b:$t; done); do
    for b in 1 8 32 128; do
      echo "## $spec tokens $b"
      $K bench --device cuda --model $spec --kernel linear --batch $b --iters 20 2>&1 | grep -E "^\|"
      if [[ $spec == *:* && $b -gt 8 ]]; then
        echo "## $spec tokens $b, bf16 tiles"
        KVS_BLOCK_GEMM=bf16-tiles $K bench --device cuda --model $spec --kernel linear --batch $b --iters 20 2>&1 | grep -E "^\|"
      fi
    done
  done
  # F8_E4M3 beyond the GEMV: cuBLASLt's block-scaled FP8 GEMM (the default) against the bf16 tiles
  # (KVS_BLOCK_GEMM=bf16-tiles) and bf16 weights, at prefill-sized batches.
  if [[ " $TYPES " == *" F8_E4M3 "* ]]; then
    for b in 32 512 4096; do
      for mode in auto bf16-tiles; do
        echo "## random:llama-3-8b:F8_E4M3 tokens $b ($mode)"
        KVS_BLOCK_GEMM=$mode $K bench --device cuda --model random:llama-3-8b:F8_E4M3 --kernel linear --batch $b \
          --iters 20 2>&1 | grep -E "^\||rror"
      done
      echo "## random:llama-3-8b tokens $b (bf16 weights)"
      $K bench --device cuda --model random:llama-3-8b --kernel linear --batch $b --iters 20 2>&1 | grep -E "^\|"
    done
  fi
} 2>&1 | tee "$OUT/linear_bench.txt"
first=${TYPES%% *}
timeout 200 ncu --clock-control none -k regex:"BlockGemv|F8Gemv" --launch-skip 32 -c 1 --section SpeedOfLight \
  --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis --section LaunchStats \
  $K bench --device cuda --model random:llama-3-8b:$first --kernel linear --batch 1 --iters 5 > "$OUT/gemv_ncu.txt" 2>&1
grep -E "Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Stall|Grid Size|Block Limit" "$OUT/gemv_ncu.txt" | head -30
{
  for spec in random:llama-3-8b $(for t in $TYPES; do echo random:llama-3-8b:$t; done); do
    echo "## $spec batch 1"
    $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 1 --max-seqs 1 2>&1 | grep -E "^\| (offline|decode)"
  done
  for spec in random:llama-3-8b random:llama-3-8b:$first; do
    echo "## $spec batch 32"
    $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 32 --max-seqs 32 2>&1 | grep -E "^\| (offline|decode)"
  done
  # The block GEMM (9-128 tokens, int8 tensor cores on the blocks) against the bf16 tiles it replaced.
  echo "## random:llama-3-8b:$first batch 32, bf16 tiles (KVS_BLOCK_GEMM=bf16-tiles)"
  KVS_BLOCK_GEMM=bf16-tiles $K bench --device cuda --model random:llama-3-8b:$first --input-len 512 --output-len 128 \
    --num-prompts 32 --max-seqs 32 2>&1 | grep -E "^\| (offline|decode)"
} 2>&1 | tee "$OUT/quant_bench.txt"
echo "total $(( $(date +%s) - start )) s"
