#!/usr/bin/env bash
# A session's first device call, when nothing new waits for a GPU: what the fourteenth session left
# unrun (1f18900: 128-key attention splits on an idle GPU, rope in 256-thread blocks; 5a0c3b7: F8
# rows split by the GGML types' split-rows kernel, the GEMV's offsets from CodeOffset) with every
# GPU test that reads the paths it touches, then the batch-1 steps of every weight format beside
# the copy ceiling (gpu_decode_path_check.sh, which also runs block_linear_test and gpu_model_test;
# the steps include the fifteenth session's activations rounded by their producers, checked by
# activation_rounding_test),
# and the per-kernel profile of a Q4_0 step. About 6 minutes from a cold machine.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
bash "$(dirname "$0")/gpu_decode_path_check.sh"
source "$(dirname "$0")/gpu_common.sh"
source "$BUILD/env.sh"
gpu_tests activation_rounding_test cuda_kv_format_test prefill_attention_test kivi_kv_test
KVS_SKIP_BUILD=1 KVS_SKIP_GEMV_PROFILE=1 KVS_PROFILE_LAUNCHES=700 bash "$(dirname "$0")/gpu_step_profile.sh" :Q4_0 \
  | grep -vE "^## random|decode steps"
echo "total $(( $(date +%s) - start )) s"
