#!/usr/bin/env bash
# On the GPU machine: build, the CUDA op tests and the GPU model tests (overlapped swaps
# included), then preemption with the host tier (swap to pinned host memory) against recompute at
# the paging benchmark's 2 GiB KV budget, the swaps overlapping the forward pass (the default) and
# queued before it (--overlap-kv-moves=false), and single decode steps with swaps beside them
# (bench --kernel kv-moves).
# Usage (device tool, carrying .deps): bash scripts/gpu_host_tier_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests ${KVS_GPU_TESTS:-cuda_backend_test gpu_model_test kv_cache_test}
{
  for mode in "--preemption-mode recompute" "--swap-space 16GiB --preemption-mode swap --overlap-kv-moves=false" \
      "--swap-space 16GiB --preemption-mode swap" "--swap-space 16GiB"; do
    echo "| mode: $mode |"
    timeout 150 $K bench --device cuda --model random:llama-3-8b --dataset sharegpt-like --num-prompts 200 \
      --max-model-len 2048 --kv-cache-memory 2GiB --max-seqs 128 --max-tokens-per-step 4096 $mode --verbose
  done
  # One decode step with swaps beside it: how much of the moves' time the overlap hides.
  for shape in "8 1024 32" "32 2048 32" "32 2048 128" "64 4096 64"; do
    set -- $shape
    timeout 90 $K bench --device cuda --model random:llama-3-8b --kernel kv-moves --batch $1 --context $2 --move-blocks $3 --iters 20
  done
} 2>&1 | grep -E '^\||rror|cost model|swap' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
