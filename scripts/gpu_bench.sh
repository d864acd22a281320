#!/usr/bin/env bash
# On the GPU machine: build, run the GPU tests, then the benchmarks; the table comes last.
# Usage (device tool, carrying .deps): bash scripts/gpu_bench.sh [quick]
source "$(dirname "$0")/gpu_common.sh"
MODE=${1:-full}
gpu_build
for t in cuda_backend_test gpu_model_test; do
  "$BUILD"/tests/$t > "$OUT/$t.log" 2>&1 && echo "$t: ok" || { echo "$t: FAILED"; grep -E 'Failure|Expected|Which|FAILED' "$OUT/$t.log" | head -20; }
done

# Ceilings on this machine: device-to-device copy (bytes read + written) and a bf16 GEMM.
{
  gpu_copy_ceiling
  python3 - <<'PY' 2>/dev/null
import torch
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda"); b = torch.randn_like(a)
for _ in range(3): a @ b
s.record(); [a @ b for _ in range(10)]; e.record(); torch.cuda.synchronize()
print(f"| ceiling | bf16 GEMM 8192^3 | {2 * 8192**3 * 10 / (s.elapsed_time(e) / 1e3) / 1e12:.0f} TFLOP/s |")
PY
} | tee "$OUT/ceilings.txt"

{
  for shape in "1 32768" "32 4096" "64 8192" "8 131072"; do
    set -- $shape
    $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 30
  done
  for L in 4096 16384; do
    $K bench --device cuda --model random:llama-3-8b --kernel prefill --batch 1 --context $L --iters 3
  done
  $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 1
  if [ "$MODE" != "quick" ]; then
    $K bench --device cuda --model random:llama-3-8b --input-len 512 --output-len 128 --num-prompts 128 \
      --max-seqs 128 --max-tokens-per-step 8192
  fi
} 2>&1 | tee "$OUT/bench.txt"
