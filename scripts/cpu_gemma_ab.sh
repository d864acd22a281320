#!/usr/bin/env bash
# kvshard's CPU backend beside llama.cpp's llama-bench on Gemma 3 270M (Q4_K_M, the CI file), one
# after the other in N rounds (this machine's speed wanders between minutes, so each round's
# ratio is of neighbouring runs): llama-bench pp128, pp1024 and tg64 (2 repetitions a round)
# against kvshard's prompt rate from its time to first token (128 and 1,024 prompt tokens) and
# its decode rate (mean step of 64 tokens after a 128-token prompt). Prints one line per figure:
# engine, prompt tokens, generated tokens, tok/s. llama-bench comes from scripts/cpu_bench.sh.
# Usage: N=5 T=2 bash scripts/cpu_gemma_ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
M=.cache/models/gemma-3-270m-q4_k_m.gguf
LB=$(ls ${LLAMA_DIR:-/tmp/llama-cpu}/src/*/vendor/llama.cpp/build/bin/llama-bench | head -1)
t=${T:-2}
for round in $(seq 1 ${N:-5}); do
  $LB -m $M -t $t -p 128,1024 -n 64 -r 2 -o csv 2>/dev/null | python3 -c '
import csv,sys
for r in csv.DictReader(sys.stdin): print("llama", r["n_prompt"], r["n_gen"], r["avg_ts"])'
  for L in 128 1024; do
    KVS_THREADS=$t ./build/launcher/kvshard bench --model $M --device cpu --input-len $L --output-len 64 --num-prompts 1 2>&1 | python3 -c "
import re,sys
s=sys.stdin.read()
tt=float(re.search(r'ttft_ms \| p50 ([0-9.]+)',s).group(1)); st=re.search(r'decode steps .*?\| ([0-9.]+) ms/step',s)
print('kvs', $L, 0, $L/(tt/1000)); print('kvs', 0, 64, 1000/float(st.group(1)) if st else 0)"
  done
done
