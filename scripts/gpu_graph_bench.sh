#!/usr/bin/env bash
# On the GPU machine: build, the CUDA tests (graph replay against direct execution included),
# then whole-model decode with CUDA graphs against --enforce-eager. Usage (device tool,
# carrying .deps): bash scripts/gpu_graph_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/kvs-out}
mkdir -p "$OUT"
start=$(date +%s)
KVS_SKIP_MODEL=1 bash scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
source build/env.sh
echo "built in $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for t in ${KVS_GPU_TESTS:-gpu_model_test cuda_backend_test cuda_sampling_test cuda_kv_format_test}; do
  timeout 300 ./build/tests/$t > "$OUT/$t.log" 2>&1 && echo "$t: ok" || { echo "$t: FAILED"; grep -E 'Failure|Expected|Which|FAILED|differ' "$OUT/$t.log" | head -20; }
done
grep -E "graphed vs direct" "$OUT/gpu_model_test.log"
echo "tests done at $(( $(date +%s) - start )) s"
K=./build/launcher/kvshard
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
