#!/usr/bin/env bash
# On the GPU machine: build, the attention correctness tests, then decode attention on issue 3's
# four target shapes (bf16) and the 8 x 128K shape in every KV format. Usage (device tool,
# carrying .deps): bash scripts/gpu_attention_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/kvs-out}
mkdir -p "$OUT"
start=$(date +%s)
KVS_SKIP_MODEL=1 bash scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
source build/env.sh
echo "built in $(( $(date +%s) - start )) s"
for t in ${KVS_GPU_TESTS:-cuda_backend_test cuda_kv_format_test gpu_model_test}; do
  timeout 300 ./build/tests/$t > "$OUT/$t.log" 2>&1 && echo "$t: ok" || { echo "$t: FAILED"; grep -E 'Failure|Expected|Which|FAILED|differ' "$OUT/$t.log" | head -20; }
done
K=./build/launcher/kvshard
{
  for shape in "1 32768" "32 4096" "64 8192" "8 131072" "16 2048" "4 16384"; do
    set -- $shape
    timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 30
  done
  for kv in fp8 int8 int4; do
    timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch 8 --context 131072 --iters 30 --kv-dtype $kv
  done
  timeout 60 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 1
} 2>&1 | grep -E '^\||rror' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
