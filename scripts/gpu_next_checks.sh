#!/usr/bin/env bash
# A session's first device call for the decode path's newest change — the sixteenth session's ops
# fused into the decode GEMV's epilogue (gate/up + SwiGLU, projection + residual add + RMSNorm:
# gemv_fusion_test, against the two ops apart bit for bit) — with every GPU test that reads the
# paths it touches, then batch-1 steps beside the copy ceiling with the fusion off (the default),
# on, and each epilogue alone (KVS_GEMV_FUSION=off|on|gated|add-norm), and the per-kernel profile
# of a Q4_0 step. About 7 minutes from a cold machine.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests gemv_fusion_test activation_rounding_test block_linear_test gpu_model_test cuda_backend_test \
  cuda_sampling_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in :Q4_0 :Q4_K :F8_E4M3; do
  for f in off on gated add-norm; do
    KVS_GEMV_FUSION=$f gpu_step "random:llama-3-8b$t, KVS_GEMV_FUSION=$f" 1 --model random:llama-3-8b$t
  done
done
echo "steps done at $(( $(date +%s) - start )) s"
[ -n "${KVS_SKIP_PROFILE:-}" ] && exit 0
KVS_SKIP_BUILD=1 KVS_SKIP_STEPS=1 KVS_SKIP_GEMV_PROFILE=1 KVS_PROFILE_LAUNCHES=600 bash "$(dirname "$0")/gpu_step_profile.sh" :Q4_0 \
  | grep -vE "^## random|decode steps"
echo "total $(( $(date +%s) - start )) s"
