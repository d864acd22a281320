#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): int4 / int2 KV (KIVI: keys per channel, values per
# token, the newest tokens in bf16 rings) on the CUDA backend (issue 24). Builds; runs the GPU
# tests (kivi_kv_test: sealed bytes, rings and attention against the CPU step by step; and the
# attention tests the split combine serves); then decode attention per KV format at the shapes of
# docs/performance.md beside the copy ceiling, and whole-engine decode per format; then the tiny
# Llama 3.1 and Gemma 3 checkpoints (transformers-written; Gemma's windowed layers) at tp=1 and at
# tp=2 on one GPU through the peer all-reduce, each against the float32 CPU reference (issues 22,
# 25; bf16 rounding flips near-ties either way, so agreement is counted, not asserted).
# Usage: bash scripts/gpu_kivi_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests kivi_kv_test cuda_kv_format_test prefill_attention_test cuda_backend_test
grep -E "worst element" "$OUT/kivi_kv_test.log" | head -20
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
# int4 / int2 decode on tensor cores (the default, paged_decode_kivi.cu) and on CUDA cores
# (KVS_KIVI_DECODE=cuda-cores, paged_attention_kivi.cu), in the same call.
for kv in bf16 int4-token int4 int2 int4:cuda-cores int2:cuda-cores; do
  echo "## $kv"
  for shape in "8 131072" "32 4096" "1 32768"; do
    set -- $shape
    KVS_KIVI_DECODE=${kv#*:} timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention \
      --batch $1 --context $2 --iters 20 --kv-dtype ${kv%%:*} 2>&1 | grep -E "^\||rror"
  done
done
for kv in bf16 int4-token int4 int2; do
  timeout 90 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 32 \
    --max-seqs 32 --kv-dtype $kv 2>&1 | grep -E "^\| (offline|decode)|rror"
done
echo "## random:gemma-3-270m, batch 1 (the windowed runner)"
timeout 100 $K bench --device cuda --model random:gemma-3-270m --input-len 512 --output-len 128 --num-prompts 1 \
  --max-seqs 1 2>&1 | grep -E "^\| (offline|decode)|rror"
echo "## tp=2 on one GPU (peer all-reduce) and tp=1, each against the float32 CPU reference"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
W="$OUT/work"; mkdir -p "$W"
python3 - > "$W/ids.jsonl" <<'PY'
import json, random
random.seed(5)
for i in range(32):
    print(json.dumps({"id": str(i), "prompt_ids": [random.randrange(2, 250) for _ in range(random.randrange(5, 200))], "max_tokens": 48}))
PY
for name in tiny-llama31 tiny-gemma3; do
  M=tests/goldens/models/$name
  timeout 200 $K generate --model $M --input "$W/ids.jsonl" --output "$W/ref.jsonl" --device cpu-reference --ignore-eos 2> "$OUT/ref.log" || tail -3 "$OUT/ref.log"
  for kv in bf16 int4; do
    timeout 100 $K generate --model $M --input "$W/ids.jsonl" --output "$W/tp1.jsonl" --device cuda --kv-dtype $kv \
      --kv-cache-memory 1GiB --ignore-eos 2> "$OUT/tp1.log" || tail -3 "$OUT/tp1.log"
    timeout 200 mpirun --oversubscribe -np 2 $K generate --model $M --input "$W/ids.jsonl" --output "$W/tp2.jsonl" \
      --device cuda --tp 2 --all-reduce custom --kv-dtype $kv --kv-cache-memory 1GiB --ignore-eos 2> "$OUT/tp2.log" \
      || tail -5 "$OUT/tp2.log"
    python3 - "$W" "$name" "$kv" <<'PY'
import json, sys
w, name, kv = sys.argv[1:]
load = lambda f: {r["id"]: r.get("output_ids") for r in map(json.loads, open(f"{w}/{f}.jsonl"))}
ref, tp1, tp2 = load("ref"), load("tp1"), load("tp2")
def agree(a, b):
    same = sum(a[k] is not None and a[k] == b.get(k) for k in a)
    first = sorted(next((i for i, (x, y) in enumerate(zip(a[k], b.get(k) or [])) if x != y), 48) for k in a if a[k] is not None)
    return f"{same}/{len(a)} identical (median first difference {first[len(first) // 2]})"
print(f"| {name} | {kv} KV | tp=1 vs f32 CPU: {agree(tp1, ref)} | tp=2 peer vs f32 CPU: {agree(tp2, ref)} | tp=2 vs tp=1: {agree(tp2, tp1)} |")
PY
  done
done
echo "total $(( $(date +%s) - start )) s"
