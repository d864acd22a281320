#!/usr/bin/env bash
# Issue 21, item 4, in one call: the batch-1 GEMVs' settings against their defaults —
# - the gated GEMV (gate, up and SwiGLU in one kernel at one token of bf16 weights:
#   CudaBackend::GatedLinear) against the GEMV then the elementwise kernel (KVS_GATED_GEMV=off);
# - the F8_E4M3 GEMV's weights streamed past L1 at one token (the default: gemv::LoadStreamed, as
#   the bf16 GEMV's) against through L1 (KVS_F8_GEMV_LOADS=cached), and its row split forced both
#   ways (KVS_F8_GEMV_WARPS=1 / 4) against the default (4 warps a row up to 4,096 rows, 1 above).
# The element-wise tests of the paths that read kept weights (block_linear_test: every type's GEMV,
# and the gated GEMV bit for bit against the two kernels) and gpu_model_test, the copy ceiling,
# layer 0 + LM head per matrix at one token, and whole batch-1 steps (Q4_0 as a control).
# KVS_DECODE_QUICK=1: block_linear_test and the steps of each setting only.
# Usage: bash scripts/gpu_decode_gemv_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_tests block_linear_test
[ -n "${KVS_DECODE_QUICK:-}" ] || gpu_tests gpu_model_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
F8=random:llama-3-8b:F8_E4M3
for round in 1 2; do
  for side in KVS_F8_GEMV_LOADS=default KVS_F8_GEMV_LOADS=cached; do
    (export $side; gpu_step "$F8, $side" 1 --model $F8)
  done
  for side in KVS_GATED_GEMV=default KVS_GATED_GEMV=off; do
    (export $side; gpu_step "random:llama-3-8b, $side" 1 --model random:llama-3-8b)
  done
done
[ -z "${KVS_DECODE_QUICK:-}" ] || { echo "total $(( $(date +%s) - start )) s"; exit 0; }
linear() {  # label, then the environment for the run
  echo "## linear, $F8, $1"; shift
  env "$@" timeout 60 $K bench --device cuda --model $F8 --kernel linear --batch 1 --iters 20 2>&1 | grep -E "^\|" | head -12
}
linear default KVS_F8_GEMV_WARPS=
linear "KVS_F8_GEMV_WARPS=1" KVS_F8_GEMV_WARPS=1
linear "KVS_F8_GEMV_WARPS=4" KVS_F8_GEMV_WARPS=4
linear "KVS_F8_GEMV_LOADS=cached" KVS_F8_GEMV_LOADS=cached
(export KVS_F8_GEMV_WARPS=1; gpu_step "$F8, KVS_F8_GEMV_WARPS=1" 1 --model $F8)
gpu_step "random:llama-3-8b:Q4_0 (control)" 1 --model random:llama-3-8b:Q4_0
echo "total $(( $(date +%s) - start )) s"
