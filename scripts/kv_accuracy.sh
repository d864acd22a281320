#!/usr/bin/env bash
# KV formats' accuracy on a real model (issue 24): perplexity on two texts (the public-domain one
# and docs/architecture.md as of efc213f) and greedy agreement with bf16 KV over 64-token continuations of 20
# prompts (the first 20 sentences of the public-domain text), on the CPU backend. Perplexity runs
# in steps of 16 tokens, as decoding sees the cache (a 512-token prefill in one step would read
# every quantized block the step seals). FORMAT@N sets --kv-residual-tokens N (int4 / int2: the
# newest N tokens kept in bf16; default 128). KVS_KV_FLAGS adds flags to every quantized run
# (e.g. --kv-sink=false: int4 / int2 without the sink); KVS_GREEDY_TOKENS sets the
# continuations' length (default 64; with the default window, continuations that short never
# leave bf16: 256 tests the sealed blocks).
# usage: kv_accuracy.sh MODEL.gguf [FORMAT...]
#   (default: f32 bf16 fp8 int8 int4-token int4@0 int4 int2@0 int2)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; shift
FORMATS=${*:-f32 bf16 fp8 int8 int4-token int4@0 int4 int2@0 int2}
K=${KVS_BUILD_DIR:-build}/launcher/kvshard
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# The second text: docs/architecture.md as of efc213f, the text docs/performance.md's KV tables
# were measured on (the living file changes with the code).
TEXT2="$W/architecture-efc213f.md"
git show efc213f:docs/architecture.md > "$TEXT2" 2>/dev/null || {
  echo "kv_accuracy: efc213f is not in this clone's history; the tables' second text is unavailable" >&2
  exit 1
}
GREEDY=${KVS_GREEDY_TOKENS:-64}
python3 - "$W/prompts.jsonl" "$GREEDY" <<'PY'
import json, sys
import re
text = open("tests/goldens/text/public_domain.txt").read()
# Whole sentences (a prompt cut mid-word is a near-tie for a small model), 20 of them.
sentences = [x.strip() for x in re.split(r"(?<=[.;:!?])\s+", text) if len(x.strip()) > 30][:20]
with open(sys.argv[1], "w") as f:
    for i, l in enumerate(sentences):
        f.write(json.dumps({"id": str(i), "prompt": l, "max_tokens": int(sys.argv[2])}) + "\n")
PY
"$K" generate --model "$MODEL" --input "$W/prompts.jsonl" --output "$W/bf16.jsonl" --kv-dtype bf16 --device cpu --ignore-eos 2>/dev/null
echo "| KV format | perplexity (public domain) | perplexity (architecture.md of efc213f) | greedy tokens equal to bf16 KV (20 x $GREEDY) | first divergence (median) |"
echo "| --- | --- | --- | --- | --- |"
for f in $FORMATS; do
  t=${f%@*}
  r=128
  [ "$f" != "$t" ] && r=${f#*@}
  KV=(--kv-dtype "$t" --kv-residual-tokens "$r" --device cpu ${KVS_KV_FLAGS:-})
  p1=$("$K" perplexity --model "$MODEL" --text tests/goldens/text/public_domain.txt "${KV[@]}" --max-tokens-per-step 16 2>&1 | awk '/^perplexity/ {print $2}')
  p2=$("$K" perplexity --model "$MODEL" --text "$TEXT2" "${KV[@]}" --max-tokens-per-step 16 2>&1 | awk '/^perplexity/ {print $2}')
  "$K" generate --model "$MODEL" --input "$W/prompts.jsonl" --output "$W/$f.jsonl" "${KV[@]}" --ignore-eos 2>/dev/null
  agree=$(python3 - "$W/bf16.jsonl" "$W/$f.jsonl" <<'PY'
import json, sys, statistics
a = {r["id"]: r["output_ids"] for r in map(json.loads, open(sys.argv[1]))}
b = {r["id"]: r["output_ids"] for r in map(json.loads, open(sys.argv[2]))}
same = total = 0
first = []
for k in a:
    x, y = a[k], b[k]
    total += len(x)
    same += sum(1 for i, j in zip(x, y) if i == j)
    d = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), len(x))
    first.append(d)
print(f"{100 * same / total:.1f}% | {statistics.median(first):.0f}")
PY
)
  echo "| $f | $p1 | $p2 | $agree |"
done
