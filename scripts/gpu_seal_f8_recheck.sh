#!/usr/bin/env bash
# The tenth session's last device call (2026-12-05): the seal's searches with their values in
# registers (kivi_kv_test holds the bytes to the CPU's), F8_E4M3 GEMM tiles of whole 128 rows and
# aligned test outputs (block_linear_test: the FP8 GEMM must run on Hopper and match element by
# element), the batch-32 steps beside bf16 at the default budget, and the int4 step's kernels by
# Nsight Compute in the staggered decode phase. One build.
# Usage: bash scripts/gpu_seal_f8_recheck.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests kivi_kv_test block_linear_test
grep -hE "GEMMs on FP8|cuBLASLt has no" "$OUT"/block_linear_test.log | sort | uniq -c
for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3; do
  for kv in bf16 int4; do
    [ $spec != random:llama-3-8b ] && [ $kv = int4 ] && continue
    echo "## $spec, $kv KV, batch 32"
    timeout 120 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 32 --max-seqs 32 \
      --kv-dtype $kv 2>&1 | grep -E "^\| decode|rror|cuBLASLt" | sort | uniq -c | head -6
  done
done
echo "steps done at $(( $(date +%s) - start )) s"
# int4's decode phase at the default budget (its 32 prompts prefilled over ~32 steps of ~450
# launches each, so 18,000 launches in): per-kernel durations.
timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --launch-skip 18000 --launch-count 900 --csv \
  --page raw $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 64 --num-prompts 32 \
  --max-seqs 32 --kv-dtype int4 --enforce-eager > /tmp/ncu_int4.csv 2> /dev/null
python3 - /tmp/ncu_int4.csv <<'PY' | tee "$OUT/int4_kernels.txt"
import csv, collections, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head = rows[0]; name, dur = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
total, count = collections.Counter(), collections.Counter()
for r in rows[2:]:
    try: t = float(r[dur].replace(",", ""))
    except ValueError: continue
    total[r[name][:70]] += t; count[r[name][:70]] += 1
print(f"## int4, decode phase: {sum(count.values())} kernels, {sum(total.values()):.0f} {rows[1][dur]} in all")
for k, t in total.most_common(12): print(f"{t:12.0f} {rows[1][dur]} {count[k]:5d}x  {k}")
PY
echo "total $(( $(date +%s) - start )) s"
