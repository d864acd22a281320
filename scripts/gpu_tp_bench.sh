#!/usr/bin/env bash
# On a two-GPU machine (device kind nvidia-h200-x2, carrying .deps): the issue 4 and 5 GPU proofs
# in one call — build, tp=2 over NCCL against tp=1 on a random checkpoint, the tp=1 vs tp=2
# decode benchmark, and paging vs static batching on a ShareGPT-like mix. Tables come last.
# Usage: bash scripts/gpu_tp_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/kvs-out}
mkdir -p "$OUT"
KVS_SKIP_MODEL=1 bash scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
source build/env.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
K=./build/launcher/kvshard
# Random weights built on each GPU; a tp rank fills its slice with the whole tensor's values.
M=random:llama-3-8b
W="$OUT/work"; mkdir -p "$W"

# 1. tp=2 over NCCL gives tp=1's greedy tokens (bf16 all-reduce order may flip near-ties: diffed,
#    not asserted).
python3 - > "$W/ids.jsonl" <<'PY'
import json, random
random.seed(3)
for i in range(16):
    print(json.dumps({"id": str(i), "prompt_ids": [random.randrange(128000) for _ in range(random.randrange(8, 300))], "max_tokens": 32}))
PY
$K generate --model "$M" --input "$W/ids.jsonl" --output "$W/tp1.jsonl" --device cuda --ignore-eos 2> "$OUT/tp1.log"
mpirun -np 2 $K generate --model "$M" --input "$W/ids.jsonl" --output "$W/tp2.jsonl" --device cuda --tp 2 --ignore-eos \
  2> "$OUT/tp2.log"
python3 - "$W/tp1.jsonl" "$W/tp2.jsonl" <<'PY' | tee "$OUT/tp_compare.txt"
import json, sys
a = [json.loads(l)["output_ids"] for l in open(sys.argv[1])]
b = [json.loads(l)["output_ids"] for l in open(sys.argv[2])]
same = sum(x == y for x, y in zip(a, b))
prefix = [next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), len(x)) for x, y in zip(a, b)]
print(f"| tp=2 (NCCL) vs tp=1 | {same}/{len(a)} requests identical | first divergence at tokens {prefix} |")
PY

# 2. Decode step, tp=1 vs tp=2, batch 1 and 64.
{
  for b in 1 64; do
    $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts $b --max-seqs $b
    mpirun -np 2 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts $b \
      --max-seqs $b --tp 2
  done
  # 3. Paging vs static batching at one KV budget (ShareGPT-like mix).
  for s in false true; do
    $K bench --device cuda --model random:llama-3-8b --dataset sharegpt-like --num-prompts 1000 --max-model-len 2048 \
      --kv-cache-memory 8GiB --max-seqs 256 --max-tokens-per-step 4096 --static-batching=$s
  done
} 2>&1 | grep -E "^\||error|Error" | tee "$OUT/bench.txt"
