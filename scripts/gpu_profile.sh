#!/usr/bin/env bash
# On the GPU machine: Nsight Compute profiles of the kernels behind issue 3's missed targets —
# causal prefill attention (L = 16K), decode attention at B=1 L=32K and B=32 L=4K (the main
# kernel and the split-K combine), bf16 and int8 KV — with the speed-of-light, warp-stall,
# occupancy and memory sections. Usage (device tool, carrying .deps): bash scripts/gpu_profile.sh
# [wgmma|kivi] — with `wgmma`, only Hopper's warp-specialised prefill kernel (L = 16K, bf16); with
# `kivi`, only the int4 (KIVI) decode kernel at 8 x 128K; with `wgmma-codes`, the Hopper prefill kernel
# at L = 16K on bf16, fp8 and int8 KV side by side.
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
M="--device cuda --model random:llama-3-8b"
SECTIONS="--section SpeedOfLight --section WarpStateStats --section Occupancy --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section LaunchStats"
prof() {  # name, kernel regex, kvshard args
  local name=$1 kernel=$2; shift 2
  timeout 240 ncu --clock-control none -k "regex:$kernel" -c 1 $SECTIONS --section SourceCounters --section InstructionStats -o "$OUT/$name" -f $K bench $M "$@" > "$OUT/$name.log" 2>&1
  ncu -i "$OUT/$name.ncu-rep" --print-details all > "$OUT/$name.txt" 2>&1
  # Per-instruction counts and stall samples, for reading against the SASS (cuobjdump -sass).
  ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/${name}_sass.csv" 2>&1
  rm -f "$OUT/$name.ncu-rep"
  echo "== $name"; grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc A|L1/TEX Hit|Shared Memory Configuration|Grid Size|Waves Per SM|Stall|Tensor" "$OUT/$name.txt" | head -40
}
if [ "${1:-}" = kivi ]; then  # issue 24: the int4 / int2 (KIVI) decode kernel beside int4-token's
  prof decode_b8_128k_kivi4 KiviAttention --kernel attention --batch 8 --context 131072 --iters 1 --kv-dtype int4
  exit 0
fi
if [ "${1:-}" = wgmma-codes ]; then  # issue 20: why fp8 / int8 KV prefill runs at 0.58x bf16's rate
  for kv in bf16 fp8 int8; do
    prof prefill_16k_wgmma_$kv PagedPrefillWgmma --kernel prefill --batch 1 --context 16384 --iters 1 --kv-dtype $kv
  done
  exit 0
fi
if [ "${1:-}" = wgmma ]; then
  prof prefill_16k_wgmma PagedPrefillWgmma --kernel prefill --batch 1 --context 16384 --iters 1
  grep -E "^\"Address|smsp__pcsamp" "$OUT/prefill_16k_wgmma_sass.csv" | head -2
  exit 0
fi
prof prefill_16k_bf16 PagedPrefillMma --kernel prefill --batch 1 --context 16384 --iters 1
prof decode_b1_32k_bf16 PagedDecodeMma --kernel attention --batch 1 --context 32768 --iters 1
prof combine_b1_32k CombineSplits --kernel attention --batch 1 --context 32768 --iters 1
prof decode_b32_4k_bf16 PagedDecodeMma --kernel attention --batch 32 --context 4096 --iters 1
prof decode_b8_128k_int8 PagedDecodeCodes --kernel attention --batch 8 --context 131072 --iters 1 --kv-dtype int8
prof decode_b8_128k_int4 PagedDecodeCodes --kernel attention --batch 8 --context 131072 --iters 1 --kv-dtype int4-token
prof decode_b8_128k_bf16 PagedDecodeMma --kernel attention --batch 8 --context 131072 --iters 1
echo "all done at $(( $(date +%s) - start )) s"
