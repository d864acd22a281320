#!/usr/bin/env bash
# Issue 21, item 4, in one call: the batch-1 step's fusions of the twentieth and twenty-first sessions —
# - the gated GEMV (gate, up and SwiGLU in one kernel at one token: CudaBackend::GatedLinear)
#   against the GEMV then the elementwise kernel (KVS_GATED_GEMV=on / off), bf16 and F8_E4M3;
# - the F8_E4M3 GEMV's weights streamed past L1 (KVS_F8_GEMV_LOADS=streamed: gemv::LoadStreamed,
#   as the bf16 GEMV's) against through L1 (the default), and its row split forced both ways
#   (KVS_F8_GEMV_WARPS=1 / 4) against the default (4 warps a row up to 4,096 rows, 1 above).
# - decode attention's key splits merged inside a thread-block cluster (KVS_DECODE_CLUSTER_MERGE=on:
#   decode_merge.cuh) against partials combined by a second kernel (the default).
# The element-wise tests of the paths that read kept weights (block_linear_test: every type's GEMV,
# and the gated GEMV bit for bit against the two kernels), decode_cluster_merge_test and
# gpu_model_test, the copy ceiling, layer 0 + LM head per matrix at one token, and whole batch-1
# steps (Q4_0 as a control).
# KVS_DECODE_QUICK=1: the tests and the steps of each setting only.
# Usage: bash scripts/gpu_decode_gemv_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
if [ -z "${KVS_DECODE_NO_TESTS:-}" ]; then
  gpu_tests block_linear_test decode_cluster_merge_test
  [ -n "${KVS_DECODE_QUICK:-}" ] || gpu_tests gpu_model_test
  echo "tests done at $(( $(date +%s) - start )) s"
fi
gpu_copy_ceiling
F8=random:llama-3-8b:F8_E4M3
# The gated F8 kernel streams its weights: every F8 side does, so that only the settings differ.
for side in "" KVS_GATED_GEMV=on KVS_DECODE_CLUSTER_MERGE=on "KVS_GATED_GEMV=on KVS_DECODE_CLUSTER_MERGE=on"; do
  (export KVS_F8_GEMV_LOADS=streamed $side; gpu_step "$F8, ${side:-default}, streamed loads" 1 --model $F8)
  (for a in $side; do export "$a"; done; gpu_step "random:llama-3-8b, ${side:-default}" 1 --model random:llama-3-8b)
done
[ -z "${KVS_DECODE_QUICK:-}" ] || { echo "total $(( $(date +%s) - start )) s"; exit 0; }
# Decode attention alone, Llama-3-8B heads, bf16 and fp8 KV: 640 keys (5 splits), 1,000 (7) and
# 4,096 (past a cluster: the same kernels either way), alternating the two merges.
for ctx in 640 1000 4096; do
  for kv in bf16 fp8; do
    for side in KVS_DECODE_CLUSTER_MERGE=off KVS_DECODE_CLUSTER_MERGE=on KVS_DECODE_CLUSTER_MERGE=off KVS_DECODE_CLUSTER_MERGE=on; do
      echo "## attention 1 x $ctx, $kv, $side"
      env $side timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch 1 --context $ctx \
        --iters 50 --kv-dtype $kv 2>&1 | grep -E "^\| (paged|decode)|rror" | head -2
    done
  done
done
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
# The cluster merge also rounds the attention output for the Q4_0 O projection.
(export KVS_DECODE_CLUSTER_MERGE=on; gpu_step "random:llama-3-8b:Q4_0, KVS_DECODE_CLUSTER_MERGE=on" 1 --model random:llama-3-8b:Q4_0)
echo "total $(( $(date +%s) - start )) s"
