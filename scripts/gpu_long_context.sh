#!/usr/bin/env bash
# On one H200: a 256K-token request on a Llama-2-7B-shaped model (512 KiB of bf16 KV per token).
# bf16 KV must be refused up front (128 GiB of KV + 13.5 GB of weights > one H200); int8 and fp8
# KV (~66 GiB) must serve it: 262,144 prompt tokens, 256 generated; and so must bf16 KV with the
# ~15 GiB the device lacks in the offload tier (bf16-offload: --kv-offload-memory, attention reads
# those blocks in host memory in place). Peak device memory is sampled beside each run, and the
# planner's figures are printed for comparison.
# Usage (device tool, after scripts/gpu_kv_bench.sh built it, or building here):
#   bash scripts/gpu_long_context.sh [int8 fp8 bf16-offload]
# KVS_LONG_GEN=N generates N tokens instead of 256 (N=2: the time to first token alone).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/kvs-out}
mkdir -p "$OUT"
BUILD=${KVS_BUILD_DIR:-build}
[ -x "$BUILD"/launcher/kvshard ] || KVS_SKIP_MODEL=1 bash scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
source "$BUILD/env.sh"
K=$BUILD/launcher/kvshard
MODEL=random:llama-2-7b-256k
PROMPT=262144
GEN=${KVS_LONG_GEN:-256}
python3 -c "
import json, random
random.seed(1)
print(json.dumps({'id': 'long', 'prompt_ids': [random.randrange(3, 32000) for _ in range($PROMPT)], 'max_tokens': $GEN}))
" > /tmp/long.jsonl
COMMON=(--model $MODEL --device cuda --input /tmp/long.jsonl --ignore-eos --max-tokens-per-step 8192 --max-seqs 8 --verbose)
free_gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | awk '{printf "%.2f", $1/1024}')
echo "== device memory ${free_gib} GiB"

echo "== bf16 KV on one GPU: must be refused before any prefill"
$K plan --model llama-2-7b-256k --gpu-mem ${free_gib}GiB --kv-dtype bf16 --context $((PROMPT + GEN)) --max-tokens-per-step 8192 --max-seqs 8 | tail -3
t0=$(date +%s)
timeout 180 $K generate "${COMMON[@]}" --output "$OUT/long_bf16.jsonl" 2>&1 | tail -3
echo "bf16 exit after $(( $(date +%s) - t0 )) s"

for mode in ${@:-int8 fp8}; do
  kv=$mode
  extra=()
  if [ "$mode" = bf16-offload ]; then
    kv=bf16
    extra=(--kv-offload-memory ${KVS_OFFLOAD:-16GiB})
  fi
  echo "== $mode KV on one GPU"
  $K plan --model llama-2-7b-256k --gpu-mem ${free_gib}GiB --kv-dtype $kv --context $((PROMPT + GEN)) --max-tokens-per-step 8192 \
    --max-seqs 8 "${extra[@]}" | tail -5
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/mem_$mode.csv" &
  smi=$!
  t0=$(date +%s)
  timeout ${KVS_LONG_TIMEOUT:-420} $K generate "${COMMON[@]}" --kv-dtype $kv "${extra[@]}" --output "$OUT/long_$mode.jsonl" \
    > "$OUT/long_$mode.log" 2>&1
  echo "(exit $?)"; grep -E "KV offload|rror" "$OUT/long_$mode.log"; tail -4 "$OUT/long_$mode.log"
  kv=$mode
  echo "$kv exit after $(( $(date +%s) - t0 )) s; peak device memory $(sort -n "$OUT/mem_$kv.csv" | tail -1) MiB"
  kill $smi 2>/dev/null
  python3 -c "
import json; r = json.loads(open('$OUT/long_$kv.jsonl').readline()); m = r.get('metrics', {})
print('$kv', {k: m[k] for k in m}, 'generated', len(r.get('output_ids', r.get('token_ids', []))))
" 2>&1 | tail -2
done
