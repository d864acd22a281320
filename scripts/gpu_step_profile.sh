#!/usr/bin/env bash
# Issue 21, item 4: where a batch-1 decode step's time goes. For each weight format, the step time
# with graphs (gpu_step) beside the sum of its kernels' own durations (Nsight Compute,
# gpu__time_duration, eager launches over the kernels of about two decode steps: bench
# --profile-decode opens the range after the first pure decode step). The step minus the kernels'
# sum is what launches, gaps and ramp-up cost; the per-kernel lines say which kernels to fuse.
# The steps run with and without programmatic dependent launch (pdl.cuh; KVS_PDL=off).
# Usage: bash scripts/gpu_step_profile.sh [formats..]   (device tool, carrying .deps; default: "" :Q4_0)
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
formats=("$@"); [ ${#formats[@]} = 0 ] && formats=("" ":Q4_0")
[ -z "${KVS_SKIP_STEPS:-}" ] && gpu_copy_ceiling
for f in "${formats[@]}"; do
  m="random:llama-3-8b$f"
  if [ -z "${KVS_SKIP_STEPS:-}" ]; then  # KVS_SKIP_STEPS=1: the caller timed the steps
    gpu_step "$m" 1 --model "$m"
    KVS_PDL=off gpu_step "$m, KVS_PDL=off" 1 --model "$m"
  fi
  csv=/tmp/ncu_step$(echo "$f" | tr -d ':').csv
  timeout 280 ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --launch-count "${KVS_PROFILE_LAUNCHES:-1000}" \
    --csv --page raw $K bench --device cuda --model "$m" --input-len 512 --output-len 6 --num-prompts 1 --max-seqs 1 \
    --enforce-eager --profile-decode > "$csv" 2> /dev/null
  python3 - "$csv" "$m" <<'PY'
import csv, collections, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head = rows[0]; name, dur = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
seq = []
for r in rows[2:]:
    try: seq.append((r[name][:80], float(r[dur].replace(",", ""))))
    except ValueError: pass
unit = rows[1][dur]
# One step: the period of the kernel-name sequence (the range may open mid-step, so any p launches
# in a row are one step's kernels once the sequence repeats with period p).
names = [n for n, _ in seq]
period = next((p for p in range(50, len(names) // 2) if all(names[i] == names[i + p] for i in range(len(names) - p))),
              len(names))
step = seq[:period]
total = sum(t for _, t in step)
print(f"## {sys.argv[2]}: {period} kernels a step, {total:.0f} {unit} of kernel time a step")
by, cnt = collections.Counter(), collections.Counter()
for n, t in step: by[n] += t; cnt[n] += 1
for k, t in by.most_common(18): print(f"{t:10.0f} {unit} {cnt[k]:4d}x {t / cnt[k]:8.1f} avg  {k}")
PY
done
echo "total $(( $(date +%s) - start )) s"
# The Q4_0 GEMV's limiter: L1 throughput (wavefronts) against DRAM's, gate/up projection, one token.
if [ -z "${KVS_SKIP_GEMV_PROFILE:-}" ]; then
  timeout 200 ncu --clock-control none -k regex:BlockGemvKernel -s 2 -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats $K bench --device cuda --model random:llama-3-8b:Q4_0 --kernel linear --batch 1 --iters 1 \
    > "$OUT/gemv_q4_0.txt" 2>&1
  grep -E "Duration|DRAM Throughput|L1/TEX Cache Throughput|L2 Cache Throughput|Memory Throughput|Mem Busy|Max Bandwidth|Mem Pipes Busy|L1/TEX Hit|Stall Long|Warp Cycles Per Issued|Grid Size|Block Size" "$OUT/gemv_q4_0.txt" | head -20
fi
