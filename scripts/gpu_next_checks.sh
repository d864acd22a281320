#!/usr/bin/env bash
# The next session's first device call (written 2026-12-05, tenth session, when no device time was
# left): df3c789's change to the Hopper prefill producer (block-table entries read a tile ahead)
# against the CPU (prefill_attention_test) and timed at 16K on every KV format, the int4 and
# F8_E4M3 batch-32 steps beside bf16, then Nsight Compute on decode steps only (bench
# --profile-decode): the int4 step's kernels and three seal launches. One build.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests prefill_attention_test kivi_kv_test block_linear_test
grep -hE "GEMMs on FP8" "$OUT"/block_linear_test.log
for kv in bf16 fp8 int8 int4-token; do
  timeout 120 $K bench --device cuda --model random:llama-3-8b --kernel prefill --batch 1 --context 16384 \
    --kv-dtype $kv 2>&1 | grep -E "^\| .*prefill|rror"
done
for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3; do
  for kv in bf16 int4; do
    [ $spec != random:llama-3-8b ] && [ $kv = int4 ] && continue
    echo "## $spec, $kv KV, batch 32"
    timeout 120 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 32 --max-seqs 32 \
      --kv-dtype $kv 2>&1 | grep -E "^\| decode|rror|cuBLASLt" | sort | uniq -c | head -6
  done
done
echo "steps done at $(( $(date +%s) - start )) s"
# Decode steps only (bench --profile-decode brackets them for the profiler): per-kernel durations of
# the int4 and bf16 steps at the default budget, then three seal launches with source counters.
for kv in int4 bf16; do
  timeout 150 ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --launch-count 900 \
    --csv --page raw $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 64 --num-prompts 32 \
    --max-seqs 32 --kv-dtype $kv --enforce-eager --profile-decode > /tmp/ncu_$kv.csv 2> /dev/null
  gpu_kernel_durations /tmp/ncu_$kv.csv "$kv decode steps" | tee -a "$OUT/step_kernels.txt"
done
timeout 200 ncu --clock-control none --profile-from-start off -k regex:SealKernel -c 3 --section SpeedOfLight \
  --section WarpStateStats --section Occupancy --section LaunchStats --section SourceCounters -o "$OUT/seal" -f \
  $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 64 --num-prompts 32 --max-seqs 32 \
  --kv-dtype int4 --enforce-eager --profile-decode > /dev/null 2>&1
ncu -i "$OUT/seal.ncu-rep" --print-details all > "$OUT/seal.txt" 2>&1 && rm -f "$OUT/seal.ncu-rep"
grep -E "Duration|Grid Size|Block Size|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Stall [A-Z]" \
  "$OUT/seal.txt" | head -24
echo "total $(( $(date +%s) - start )) s"
