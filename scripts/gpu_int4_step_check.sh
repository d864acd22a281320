#!/usr/bin/env bash
# Why a whole int4-KV decode step took 11.06 ms on an H200 (2026-12-05, 3cf26b6) against 7.67 ms at
# cb24a33, while its decode attention alone got 2.7x faster: the same step with each suspect turned
# off, bf16 and int4-token beside it, in one call (device tool, carrying .deps). The suspects: the
# tensor-core decode kernel (KVS_KIVI_DECODE=cuda-cores), the sink (--kv-sink=false), and the
# schedule (cb24a33 prefilled all prompts in one step, so every sequence sealed its blocks in the
# same steps; the default 512-token budget staggers them, so some layer seals in nearly every step),
# and CUDA graphs (int4 steps ran without them until the rings were padded into graphed steps).
# Usage: bash scripts/gpu_int4_step_check.sh
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
step() {  # label, then extra flags
  local label=$1; shift
  echo "## $label"
  timeout 120 $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 32 \
    --max-seqs 32 "$@" 2>&1 | grep -E "^\| decode|rror"
}
for budget in 512 16384; do
  step "bf16, budget $budget" --max-tokens-per-step $budget
  [ $budget = 512 ] && step "int4-token, budget $budget" --max-tokens-per-step $budget --kv-dtype int4-token
  step "int4, budget $budget" --max-tokens-per-step $budget --kv-dtype int4
  step "int4 without graphs, budget $budget" --max-tokens-per-step $budget --kv-dtype int4 --enforce-eager
  [ $budget = 512 ] || continue  # the kernel and sink suspects once
  KVS_KIVI_DECODE=cuda-cores step "int4 on CUDA cores, budget $budget" --max-tokens-per-step $budget --kv-dtype int4
  step "int4 without the sink, budget $budget" --max-tokens-per-step $budget --kv-dtype int4 --kv-sink=false
done
# Where the int4 step's time goes, by kernel: nsys where the machine has it, else Nsight Compute's
# per-kernel durations over ~two decode steps (eager, so each kernel is its own launch; bench
# --profile-decode opens the profiler's range after the first pure decode step — windows placed by
# launch count, as this script first did, held prefill steps' seals).
if command -v nsys >/dev/null; then
  nsys profile -o /tmp/int4 --force-overwrite true $K bench --device cuda --model random:llama-3-8b --input-len 512 \
    --output-len 64 --num-prompts 32 --max-seqs 32 --kv-dtype int4 > /dev/null 2>&1
  nsys stats --report cuda_gpu_kern_sum /tmp/int4.nsys-rep 2>/dev/null | head -25 | tee "$OUT/int4_kernels.txt"
elif command -v ncu >/dev/null; then
  for kv in int4 bf16; do
    timeout 240 ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --launch-count 900 \
      --csv --page raw $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 8 --num-prompts 32 \
      --max-seqs 32 --max-tokens-per-step 16384 --kv-dtype $kv --enforce-eager --profile-decode > /tmp/ncu_$kv.csv 2> /dev/null
    gpu_kernel_durations /tmp/ncu_$kv.csv "$kv" | tee -a "$OUT/int4_kernels.txt"
  done
fi
echo "total $(( $(date +%s) - start )) s"
