#!/usr/bin/env bash
# Issue 21, item 4: the F8_E4M3 decode GEMV with its weights streamed past L1 (gemv::LoadStreamed,
# as the bf16 GEMV's; KVS_F8_GEMV_LOADS=cached: through L1, as before) and its row split forced both ways (KVS_F8_GEMV_WARPS=1 / 4) against the
# default (4 warps a row up to 4,096 rows, 1 above), in one call: the element-wise tests of the
# paths that read kept weights (block_linear_test), the copy ceiling, layer 0 + LM head per matrix at one token, and
# whole batch-1 steps (F8, and Q4_0 as a control). (device tool, carrying .deps)
# Usage: bash scripts/gpu_f8_gemv_check.sh
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_tests block_linear_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for w in "" 1 4; do
  echo "## linear, random:llama-3-8b:F8_E4M3, KVS_F8_GEMV_WARPS=${w:-default}"
  KVS_F8_GEMV_WARPS=$w timeout 60 $K bench --device cuda --model random:llama-3-8b:F8_E4M3 --kernel linear --batch 1 \
    --iters 20 2>&1 | grep -E "^\|" | head -12
done
echo "## linear, random:llama-3-8b:F8_E4M3, KVS_F8_GEMV_LOADS=cached"
KVS_F8_GEMV_LOADS=cached timeout 60 $K bench --device cuda --model random:llama-3-8b:F8_E4M3 --kernel linear --batch 1 \
  --iters 20 2>&1 | grep -E "^\|" | head -12
for w in "" 1 4; do
  KVS_F8_GEMV_WARPS=$w gpu_step "random:llama-3-8b:F8_E4M3, KVS_F8_GEMV_WARPS=${w:-default}" 1 \
    --model random:llama-3-8b:F8_E4M3
done
KVS_F8_GEMV_LOADS=cached gpu_step "random:llama-3-8b:F8_E4M3, KVS_F8_GEMV_LOADS=cached (weights through L1)" 1 \
  --model random:llama-3-8b:F8_E4M3
gpu_step "random:llama-3-8b:Q4_0 (control)" 1 --model random:llama-3-8b:Q4_0
echo "total $(( $(date +%s) - start )) s"
