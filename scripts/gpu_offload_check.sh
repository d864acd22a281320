#!/usr/bin/env bash
# On the GPU machine: build, the CUDA tests (the offload tier's memory and an offloaded sequence
# against the device alone included), then one 32K-token request on the Llama-3-8B shape with a
# 2 GiB device cache and the rest in the offload tier, against an 8 GiB cache that holds it.
# Usage (device tool, carrying .deps): bash scripts/gpu_offload_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests ${KVS_GPU_TESTS:-cuda_backend_test gpu_model_test cuda_sampling_test cuda_kv_format_test}
grep -E "graphed vs direct|offload:" "$OUT/gpu_model_test.log"
echo "tests done at $(( $(date +%s) - start )) s"
{
  for cache in "--kv-cache-memory 8GiB" "--kv-cache-memory 2GiB --kv-offload-memory 4GiB"; do
    echo "| cache: $cache |"
    timeout 120 $K bench --device cuda --model random:llama-3-8b --input-len 32768 --output-len 128 --num-prompts 1 \
      --max-tokens-per-step 8192 $cache --verbose
  done
} 2>&1 | grep -E '^\||rror|KV offload' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
