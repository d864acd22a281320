#!/usr/bin/env bash
# On the GPU machine: build, the attention correctness tests, then decode attention on issue 3's
# four target shapes (bf16) and the 8 x 128K shape in every KV format. Usage (device tool,
# carrying .deps): bash scripts/gpu_attention_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests ${KVS_GPU_TESTS:-cuda_backend_test cuda_kv_format_test gpu_model_test}
{
  for shape in "1 32768" "32 4096" "64 8192" "8 131072" "16 2048" "4 16384"; do
    set -- $shape
    timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 30
  done
  for kv in fp8 int8 int4-token; do
    timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch 8 --context 131072 --iters 30 --kv-dtype $kv
  done
  timeout 60 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 1
} 2>&1 | grep -E '^\||rror' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
