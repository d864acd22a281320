#!/usr/bin/env bash
# Issue 21, item 4, in one call: the batch-1 GEMVs of the twentieth session —
# - the gated GEMV (gate, up and SwiGLU in one kernel at one token: CudaBackend::GatedLinear)
#   against the GEMV then the elementwise kernel (KVS_GATED_GEMV=on / off), bf16 and F8_E4M3;
# - the F8_E4M3 GEMV's weights streamed past L1 (KVS_F8_GEMV_LOADS=streamed: gemv::LoadStreamed,
#   as the bf16 GEMV's) against through L1 (the default), and its row split forced both ways
#   (KVS_F8_GEMV_WARPS=1 / 4) against the default (4 warps a row up to 4,096 rows, 1 above).
# The element-wise tests of the paths that read kept weights (block_linear_test: every type's GEMV,
# and the gated GEMV bit for bit against the two kernels) and gpu_model_test, the copy ceiling,
# layer 0 + LM head per matrix at one token, and whole batch-1 steps (Q4_0 as a control).
# KVS_DECODE_QUICK=1: block_linear_test and the gated steps only.
# Usage: bash scripts/gpu_decode_gemv_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_tests block_linear_test
[ -n "${KVS_DECODE_QUICK:-}" ] || gpu_tests gpu_model_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
F8=random:llama-3-8b:F8_E4M3
# The gated F8 kernel streams its weights: both sides do, so that only the fusion differs.
for side in KVS_GATED_GEMV=on KVS_GATED_GEMV=off; do
  (export $side KVS_F8_GEMV_LOADS=streamed; gpu_step "$F8, $side, streamed loads" 1 --model $F8)
  (export $side; gpu_step "random:llama-3-8b, $side" 1 --model random:llama-3-8b)
done
[ -z "${KVS_DECODE_QUICK:-}" ] || { echo "total $(( $(date +%s) - start )) s"; exit 0; }
linear() {  # label, then the environment for the run
  echo "## linear, $F8, $1"; shift
  env "$@" timeout 60 $K bench --device cuda --model $F8 --kernel linear --batch 1 --iters 20 2>&1 | grep -E "^\|" | head -12
}
linear default KVS_F8_GEMV_WARPS=
linear "KVS_F8_GEMV_WARPS=1" KVS_F8_GEMV_WARPS=1
linear "KVS_F8_GEMV_WARPS=4" KVS_F8_GEMV_WARPS=4
linear "KVS_F8_GEMV_LOADS=streamed" KVS_F8_GEMV_LOADS=streamed
for side in KVS_F8_GEMV_WARPS=1 KVS_F8_GEMV_LOADS=streamed; do
  (export $side; gpu_step "$F8, $side" 1 --model $F8)
done
gpu_step "random:llama-3-8b:Q4_0 (control)" 1 --model random:llama-3-8b:Q4_0
echo "total $(( $(date +%s) - start )) s"
