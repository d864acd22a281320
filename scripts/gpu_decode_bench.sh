#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): paged decode attention (bf16 KV, Llama-3-8B heads)
# beside the device-to-device copy ceiling, in one call. Builds and runs the CUDA tests first.
# Usage: bash scripts/gpu_decode_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test cuda_kv_format_test gpu_model_test
gpu_copy_ceiling | tee "$OUT/ceiling.txt"
for shape in "1 32768" "32 4096" "64 8192" "8 131072"; do
  set -- $shape
  $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 30
done 2>&1 | tee "$OUT/decode_bench.txt" | grep "^|"
echo "total $(( $(date +%s) - start )) s"
