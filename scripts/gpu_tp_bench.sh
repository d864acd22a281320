#!/usr/bin/env bash
# On a two-GPU machine (device kind nvidia-h200-x2, carrying .deps): the two-GPU runs in one call
# (issues 4, 5, 8 and 27) — build; `bench --kernel all-reduce` (NCCL against the peer-memory
# all-reduce, 1 KiB to 64 MiB); tp=2 over NCCL and over the peer path against tp=1 and against the
# float32 CPU reference; the decode step at tp=1 and tp=2 (nccl, custom), batch 1 and 64;
# serving on both GPUs (tp=2, and dp=2 routed by KV and round-robin) at three request rates
# (KVS_SERVE=0 skips it); the 256K-token bf16 request over both GPUs (KVS_LONG=0 skips it); and
# paging vs static batching on a ShareGPT-like mix (KVS_PAGING=1). Tables come last.
# Usage: bash scripts/gpu_tp_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
# Random weights built on each GPU; a tp rank fills its slice with the whole tensor's values.
M=random:llama-3-8b
W="$OUT/work"; mkdir -p "$W"

# 0. The all-reduce alone: NCCL and the peer path per message size (target 8 KB <= 6 us).
timeout 120 mpirun -np 2 $K bench --kernel all-reduce --device cuda --iters 50 2>&1 | grep -E "^\||rror" | tee "$OUT/all_reduce.txt"

# 1. tp=2 over NCCL gives tp=1's greedy tokens (bf16 all-reduce order may flip near-ties: diffed,
#    not asserted).
python3 - > "$W/ids.jsonl" <<'PY'
import json, random
random.seed(3)
for i in range(16):
    print(json.dumps({"id": str(i), "prompt_ids": [random.randrange(128000) for _ in range(random.randrange(8, 300))], "max_tokens": 32}))
PY
timeout 120 $K generate --model "$M" --input "$W/ids.jsonl" --output "$W/tp1.jsonl" --device cuda --ignore-eos 2> "$OUT/tp1.log"
timeout 120 mpirun -np 2 $K generate --model "$M" --input "$W/ids.jsonl" --output "$W/tp2.jsonl" --device cuda --tp 2 --ignore-eos \
  2> "$OUT/tp2.log"
python3 - "$W/tp1.jsonl" "$W/tp2.jsonl" <<'PY' | tee "$OUT/tp_compare.txt"
import json, sys
a = [json.loads(l)["output_ids"] for l in open(sys.argv[1])]
b = [json.loads(l)["output_ids"] for l in open(sys.argv[2])]
same = sum(x == y for x, y in zip(a, b))
prefix = [next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), len(x)) for x, y in zip(a, b)]
print(f"| tp=2 (NCCL) vs tp=1 | {same}/{len(a)} requests identical | first divergence at tokens {prefix} |")
PY

# 1b. The peer path against NCCL and both against the float32 CPU reference, on the tiny Llama 3.1
#     checkpoint transformers wrote (bf16 rounding flips near-ties either way: counted).
TINY=tests/goldens/models/tiny-llama31
python3 - > "$W/tiny.jsonl" <<'PY'
import json, random
random.seed(5)
for i in range(32):
    print(json.dumps({"id": str(i), "prompt_ids": [random.randrange(2, 250) for _ in range(random.randrange(5, 200))], "max_tokens": 48}))
PY
timeout 120 $K generate --model $TINY --input "$W/tiny.jsonl" --output "$W/tiny_ref.jsonl" --device cpu-reference --ignore-eos 2>/dev/null
timeout 120 $K generate --model $TINY --input "$W/tiny.jsonl" --output "$W/tiny_tp1.jsonl" --device cuda --ignore-eos 2>/dev/null
for ar in nccl custom; do
  timeout 120 mpirun -np 2 $K generate --model $TINY --input "$W/tiny.jsonl" --output "$W/tiny_$ar.jsonl" --device cuda --tp 2 \
    --all-reduce $ar --ignore-eos 2> "$OUT/tiny_$ar.log" || tail -3 "$OUT/tiny_$ar.log"
done
python3 - "$W" <<'PY' | tee "$OUT/tiny_tokens.txt"
import json, sys
load = lambda f: {r["id"]: r.get("output_ids") for r in map(json.loads, open(f"{sys.argv[1]}/tiny_{f}.jsonl"))}
runs = {k: load(k) for k in ("ref", "tp1", "nccl", "custom")}
def same(a, b):
    return sum(runs[a][k] is not None and runs[a][k] == runs[b].get(k) for k in runs[a])
print(f"| tiny-llama31, 32 x 48 greedy | tp=2 custom == tp=2 NCCL: {same('custom', 'nccl')}/32 | vs f32 CPU: tp=1 {same('tp1', 'ref')}, "
      f"tp=2 NCCL {same('nccl', 'ref')}, tp=2 custom {same('custom', 'ref')} of 32 |")
PY

# 2. Decode step, tp=1 vs tp=2 (NCCL and the peer path), batch 1 and 64 (target tp=2 <= 0.55x tp=1).
{
  for b in 1 64; do
    timeout 60 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts $b --max-seqs $b
    for ar in nccl custom; do
      timeout 90 mpirun -np 2 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 \
        --num-prompts $b --max-seqs $b --tp 2 --all-reduce $ar
    done
  done
  # 3. Paging vs static batching at one KV budget (ShareGPT-like mix).
  [ "${KVS_PAGING:-0}" = 1 ] && for s in false true; do
    $K bench --device cuda --model random:llama-3-8b --dataset sharegpt-like --num-prompts 1000 --max-model-len 2048 \
      --kv-cache-memory 8GiB --max-seqs 256 --max-tokens-per-step 4096 --static-batching=$s
  done
} 2>&1 | grep -E "^\||error|Error" | tee "$OUT/bench.txt"

# 3b. Serving on both GPUs (issue 27): a Llama-3-8B-shaped checkpoint with SmolLM2's tokenizer
#     (as scripts/gpu_serve_bench.sh writes it), served by `mpirun -np 2 serve` as tp=2 and as dp=2
#     (routed by KV and prefix, and round-robin), ShareGPT-like requests at three Poisson rates.
if [ "${KVS_SERVE:-1}" = 1 ]; then
  SM=/tmp/llama3-8b-smolvocab
  gpu_serving_checkpoint "$SM"
  for layout in "tp2 --tp 2" "dp2kv --tp 1 --dp-routing kv" "dp2rr --tp 1 --dp-routing round-robin"; do
    set -- $layout
    name=$1; shift
    mpirun -np 2 $K serve --model "$SM" --device cuda --max-seqs 128 --max-tokens-per-step 8192 --port 8000 "$@" \
      > "$OUT/serve_$name.log" 2>&1 &
    server=$!
    for _ in $(seq 1 240); do curl -sf http://127.0.0.1:8000/health > /dev/null && break; sleep 0.5; done
    for rate in 4 8 16; do
      timeout 300 $K bench --url http://127.0.0.1:8000 --dataset sharegpt-like --num-prompts 300 --rate $rate --seed $rate \
        --result-json "$OUT/serve_${name}_r$rate.json" 2>&1 | grep '^|' | sed "s/^/$name rate $rate /"
    done
    kill -TERM $server; wait $server
  done | tee "$OUT/serving.txt"
  python3 scripts/plot_serving_bench.py "$OUT/serving.png" "$OUT"/serve_*_r*.json 2>&1 | tail -1
fi

# 4. Issue 8: one request of 262,144 prompt tokens + 256 generated, bf16 KV (128 GiB), tp=2: half
#    the KV heads, so half the cache, on each H200.
if [ "${KVS_LONG:-1}" = 1 ]; then
  python3 -c "
import json, random
random.seed(1)
print(json.dumps({'id': 'long', 'prompt_ids': [random.randrange(3, 32000) for _ in range(262144)], 'max_tokens': 256}))
" > "$W/long.jsonl"
  gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | awk '{printf "%.2f", $1/1024}')
  $K plan --model llama-2-7b-256k --gpu-mem ${gib}GiB --tp 2 --kv-dtype bf16 --context 262400 --max-tokens-per-step 8192 \
    --max-seqs 8 | tail -4 | tee "$OUT/long_tp2_plan.txt"
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/mem_tp2.csv" &
  smi=$!
  t0=$(date +%s)
  timeout ${KVS_LONG_TIMEOUT:-300} mpirun -np 2 $K generate --model random:llama-2-7b-256k --device cuda --tp 2 \
    --input "$W/long.jsonl" --output "$OUT/long_tp2.jsonl" --ignore-eos --max-tokens-per-step 8192 --max-seqs 8 --verbose \
    > "$OUT/long_tp2.log" 2>&1
  echo "tp=2 256K exit $? after $(( $(date +%s) - t0 )) s; peak MiB per GPU: $(sort -t, -k2 -n "$OUT/mem_tp2.csv" | tail -1)"
  kill $smi 2>/dev/null
  grep -vE "progress" "$OUT/long_tp2.log" | tail -4
  python3 -c "
import json; r = json.loads(open('$OUT/long_tp2.jsonl').readline()); print('tp2 long', r.get('metrics'), len(r.get('output_ids', [])))"
fi
