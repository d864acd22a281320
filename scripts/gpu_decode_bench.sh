#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): paged decode attention (bf16 KV, Llama-3-8B heads)
# beside the device-to-device copy ceiling, in one call. Builds and runs the CUDA tests first.
# Usage: bash scripts/gpu_decode_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test cuda_kv_format_test gpu_model_test
python3 - <<'PY' 2>/dev/null | tee "$OUT/ceiling.txt"
import torch
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record(); [y.copy_(x) for _ in range(20)]; e.record(); torch.cuda.synchronize()
print(f"| ceiling | device-to-device copy | {2 * x.numel() * 20 / (s.elapsed_time(e) / 1e3) / 1e12:.2f} TB/s |")
PY
for shape in "1 32768" "32 4096" "64 8192" "8 131072"; do
  set -- $shape
  $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 30
done 2>&1 | tee "$OUT/decode_bench.txt" | grep "^|"
echo "total $(( $(date +%s) - start )) s"
