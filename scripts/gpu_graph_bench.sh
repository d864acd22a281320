#!/usr/bin/env bash
# On the GPU machine: build, the CUDA tests (graph replay against direct execution included),
# then whole-model decode with CUDA graphs against --enforce-eager. Usage (device tool,
# carrying .deps): bash scripts/gpu_graph_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests ${KVS_GPU_TESTS:-gpu_model_test cuda_backend_test cuda_sampling_test cuda_kv_format_test}
grep -E "graphed vs direct" "$OUT/gpu_model_test.log"
echo "tests done at $(( $(date +%s) - start )) s"
{
  for eager in "" "--enforce-eager"; do
    timeout 60 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 1 $eager
    timeout 120 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 128 \
      --max-seqs 128 --max-tokens-per-step 8192 $eager
  done
  timeout 60 $K bench --device cuda --model random:smollm2-135m --input-len 512 --output-len 128 --num-prompts 1
  timeout 60 $K bench --device cuda --model random:smollm2-135m --input-len 512 --output-len 128 --num-prompts 1 --enforce-eager
} 2>&1 | grep -E '^\||rror' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
