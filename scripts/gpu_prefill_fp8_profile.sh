#!/usr/bin/env bash
# On one GPU (device tool, carrying .deps, after a build on the same warm machine): Nsight Compute
# on the Hopper prefill kernel at 16K with fp8 KV, its keys read as codes (the default) and decoded
# first (KVS_WGMMA_FP8_KEYS=off): duration, tensor pipe, issue and warp-stall figures side by side.
source "$(dirname "$0")/gpu_common.sh"
source "$BUILD/env.sh"
for side in default KVS_WGMMA_FP8_KEYS=off; do
  env $([ $side = default ] || echo $side) timeout 200 ncu --clock-control none -k "regex:PagedPrefillWgmma" -c 1 \
    --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis --section InstructionStats \
    $K bench --device cuda --model random:llama-3-8b --kernel prefill --batch 1 --context 16384 --iters 1 \
    --kv-dtype fp8 > "$OUT/ncu_fp8_$side.txt" 2>&1
  echo "== $side"
  grep -E "Duration|Compute \(SM\) Throughput|Executed Ipc A|Issue Slots Busy|Warp Cycles Per Issued|Stall|Tensor|Executed Instructions  " \
    "$OUT/ncu_fp8_$side.txt" | head -24
done
