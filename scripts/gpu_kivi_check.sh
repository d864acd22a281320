#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): int4 / int2 KV (KIVI: keys per channel, values per
# token, the newest tokens in bf16 rings) on the CUDA backend (issue 24). Builds; runs the GPU
# tests (kivi_kv_test: sealed bytes, rings and attention against the CPU step by step; and the
# attention tests the split combine serves); then decode attention per KV format at the shapes of
# docs/performance.md beside the copy ceiling, and whole-engine decode per format; then Gemma 3
# (tiny checkpoint, windowed layers) at tp=2 on one GPU through the peer all-reduce against tp=1
# (issue 25).
# Usage: bash scripts/gpu_kivi_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests kivi_kv_test cuda_kv_format_test prefill_attention_test cuda_backend_test
grep -E "worst element" "$OUT/kivi_kv_test.log" | head -20
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for kv in bf16 int4-token int4 int2; do
  for shape in "8 131072" "32 4096" "1 32768"; do
    set -- $shape
    timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 20 \
      --kv-dtype $kv 2>&1 | grep -E "^\||rror"
  done
done
for kv in bf16 int4-token int4 int2; do
  timeout 90 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 32 \
    --max-seqs 32 --kv-dtype $kv 2>&1 | grep -E "^\| (offline|decode)|rror"
done
echo "## random:gemma-3-270m, batch 1 (the windowed runner)"
timeout 100 $K bench --device cuda --model random:gemma-3-270m --input-len 512 --output-len 128 --num-prompts 1 \
  --max-seqs 1 2>&1 | grep -E "^\| (offline|decode)|rror"
echo "## tiny Gemma 3 (4 q / 2 KV heads, window 7): tp=2 on one GPU (peer all-reduce) against tp=1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
W="$OUT/work"; mkdir -p "$W"
python3 - > "$W/ids.jsonl" <<'PY'
import json, random
random.seed(5)
for i in range(6):
    print(json.dumps({"id": str(i), "prompt_ids": [random.randrange(2, 250) for _ in range(random.randrange(5, 60))], "max_tokens": 40}))
PY
M=tests/goldens/models/tiny-gemma3
for kv in bf16 int4; do
  timeout 100 $K generate --model $M --input "$W/ids.jsonl" --output "$W/tp1_$kv.jsonl" --device cuda --kv-dtype $kv \
    --kv-cache-memory 1GiB --ignore-eos 2> "$OUT/gemma_tp1_$kv.log" || tail -3 "$OUT/gemma_tp1_$kv.log"
  timeout 200 mpirun --oversubscribe -np 2 $K generate --model $M --input "$W/ids.jsonl" --output "$W/tp2_$kv.jsonl" \
    --device cuda --tp 2 --all-reduce custom --kv-dtype $kv --kv-cache-memory 1GiB --ignore-eos 2> "$OUT/gemma_tp2_$kv.log" \
    || tail -5 "$OUT/gemma_tp2_$kv.log"
  python3 - "$W/tp1_$kv.jsonl" "$W/tp2_$kv.jsonl" "$kv" <<'PY'
import json, sys
a = {r["id"]: r.get("output_ids") for r in map(json.loads, open(sys.argv[1]))}
b = {r["id"]: r.get("output_ids") for r in map(json.loads, open(sys.argv[2]))}
same = sum(a[k] is not None and a[k] == b.get(k) for k in a)
print(f"tiny Gemma 3, {sys.argv[3]} KV: tp=2 (one GPU, peer all-reduce) vs tp=1: {same} of {len(a)} requests identical")
PY
done
echo "total $(( $(date +%s) - start )) s"
