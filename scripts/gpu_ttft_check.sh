#!/usr/bin/env bash
# The 65,536-token prompt's time to first token (issue 20) with the GPU's SM clock and power
# sampled while it runs, beside the same attention in the prefill microbenchmark (short and long
# runs, sampled too): whether the attention kernel's in-run rate differs from the benchmark's
# because of the kernel or because of the clock. Also the tests of the kernels a prompt step runs
# and the batch-1 steps of bf16 and Q4_0 (the elementwise kernels serve decode too).
# Usage: bash scripts/gpu_ttft_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_tests cuda_backend_test activation_rounding_test gpu_model_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_timeline_lib || exit 1

sampled() {  # label, then a command: runs it with the SM clock and power sampled every 100 ms
  local label=$1; shift
  nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader,nounits -lms 100 > /tmp/smi.csv &
  local smi=$!
  "$@"
  kill $smi; wait $smi 2> /dev/null
  awk -F', ' -v l="$label" '$2 > 200 { n++; c += $1; p += $2; if (min == "" || $1 < min) min = $1; if ($3 > t) t = $3 }
    END { if (n) printf "| clock while busy (power > 200 W) | %s | %d samples | SM %.0f MHz mean, %d min | %.0f W mean | %d C max |\n", l, n, c / n, min, p / n, t }' /tmp/smi.csv
}
sampled "65,536-token prompt" gpu_long_prompt 8192
CUDA_INJECTION64_PATH=/tmp/libkvs_timeline.so KVS_TIMELINE_OUT=/tmp/prefill_timeline.csv gpu_long_prompt 8192
python3 scripts/kernel_time_by_kind.py /tmp/prefill_timeline.csv "65,536-token prompt, 8192 a step (traced)" --long-prompt
cp /tmp/prefill_timeline.csv "$OUT/"
chunk() { $K bench --device cuda --kernel prefill --batch 1 --model random:llama-3-8b --context 65536 --query-len 8192 "$@" | grep "^|"; }
sampled "prefill bench, 8K chunk over 56K, 5 iterations" chunk --iters 5
sampled "prefill bench, 8K chunk over 56K, 200 iterations" chunk --iters 200
gpu_copy_ceiling
gpu_step "random:llama-3-8b" 1 --model random:llama-3-8b
gpu_step "random:llama-3-8b:Q4_0" 1 --model random:llama-3-8b:Q4_0
echo "total $(( $(date +%s) - start )) s"
