#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): the front door against the engine it serves.
# A Llama-3-8B-shaped checkpoint (random bf16 weights, SmolLM2's tokenizer and 49,152-token
# vocabulary, so that `serve` can detokenize) is written by `make-model`; then the same 128
# requests of 512 prompt / 128 output tokens run offline (`bench`) and through `serve` with
# `bench --url --rate 0` (all at once), and 512 streams at once. The table comes last.
# Usage: bash scripts/gpu_serve_bench.sh [max_seqs=128]
source "$(dirname "$0")/gpu_common.sh"
MAX_SEQS=${1:-128}
gpu_build
M=/tmp/llama3-8b-smolvocab
gpu_serving_checkpoint "$M" || exit 1
echo "checkpoint ready at $(( $(date +%s) - start )) s"
ENGINE=(--device cuda --max-seqs "$MAX_SEQS" --max-tokens-per-step 8192)
$K bench --model "$M" "${ENGINE[@]}" --input-len 512 --output-len 128 --num-prompts 128 2>&1 | tee "$OUT/offline.txt" | grep '^|'

$K serve --model "$M" "${ENGINE[@]}" --port 8000 > "$OUT/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 240); do curl -sf http://127.0.0.1:8000/health > /dev/null && break; sleep 0.5; done
curl -sf http://127.0.0.1:8000/health > /dev/null || { echo "server did not come up"; tail -20 "$OUT/serve.log"; exit 1; }
# Each run draws other prompts (--seed), so none hits the prefix cache of the one before.
for run in "128 1" "128 2" "512 3"; do
  set -- $run
  $K bench --url http://127.0.0.1:8000 --rate 0 --num-prompts $1 --seed $2 --input-len 512 --output-len 128 \
    --result-json "$OUT/serve_$1_$2.json" 2>&1 | tee -a "$OUT/served.txt" | grep '^|'
done
kill -TERM $server
wait $server
echo "server exit $? after SIGTERM"
grep -E "drained|stopped" "$OUT/serve.log" | tail -2
python3 - "$OUT" <<'PY'
import json, sys, os
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    if not name.startswith("serve_") or not name.endswith(".json"): continue
    r = json.load(open(os.path.join(d, name)))
    print(name, {k: v for k, v in r.items() if not isinstance(v, (list, dict))}, "ttft_ms", r.get("ttft_ms"))
PY
