#!/usr/bin/env bash
# On the GPU machine: build, the sampling GPU tests, then token sampling on the GPU against the
# logits-to-host path, and the offline engine greedy vs sampled. Usage (device tool, carrying
# .deps): bash scripts/gpu_sampling_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_sampling_test
timeout 300 "$BUILD"/tests/gpu_model_test --gtest_filter='GpuSampling*:GpuPreset*' > "$OUT/gpu_model_test.log" 2>&1 \
  && echo "gpu_model_test (sampling, presets): ok" || { echo "gpu_model_test: FAILED"; grep -E 'Failure|Expected|Which|FAILED' "$OUT/gpu_model_test.log" | head -20; }
echo "tests done at $(( $(date +%s) - start )) s"
{
  for b in 1 32 128; do
    for p in "--temperature 0.8" "--temperature 0.8 --top-p 0.95" "--temperature 0.8 --top-k 50" "--temperature 0.8 --top-k 50 --top-p 0.9"; do
      timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel sample --batch $b --iters 20 $p
    done
  done
  for p in "" "--temperature 0.8 --top-p 0.95 --seed 1"; do
    timeout 120 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 128 \
      --max-seqs 128 --max-tokens-per-step 8192 $p
    timeout 60 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 1 $p
  done
} 2>&1 | grep -E '^\||rror' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
