#!/usr/bin/env bash
# On the GPU machine: build, the CUDA op tests, then preemption with the host tier (swap to
# pinned host memory) against recompute at the paging benchmark's 2 GiB KV budget. Usage
# (device tool, carrying .deps): bash scripts/gpu_host_tier_bench.sh
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
for t in ${KVS_GPU_TESTS:-cuda_backend_test}; do
  timeout 300 ./build/tests/$t > "$OUT/$t.log" 2>&1 && echo "$t: ok" || { echo "$t: FAILED"; grep -E 'Failure|Expected|Which|FAILED|differ' "$OUT/$t.log" | head -20; }
done
K=./build/launcher/kvshard
{
  for mode in "--preemption-mode recompute" "--swap-space 16GiB --preemption-mode swap" "--swap-space 16GiB"; do
    echo "| mode: $mode |"
    timeout 150 $K bench --device cuda --model random:llama-3-8b --dataset sharegpt-like --num-prompts 200 \
      --max-model-len 2048 --kv-cache-memory 2GiB --max-seqs 128 --max-tokens-per-step 4096 $mode --verbose
  done
} 2>&1 | grep -E '^\||rror|cost model|swap' | tee "$OUT/bench.md"
echo "all done at $(( $(date +%s) - start )) s"
