#!/usr/bin/env bash
# A session's first device call: the decode path's changes not yet run on a GPU — 1f18900 (128-key
# attention splits on an idle GPU, rope in 256-thread blocks), 5a0c3b7 (F8 rows split by the GGML
# types' split-rows kernel), and the fifteenth session's fewer kernels a decode layer (activations
# rounded by the kernels that write them: activation_rounding_test; rope fused with the KV write:
# cuda_backend_test) — with every GPU test that reads the paths they touch, then the batch-1 steps
# of every weight format beside the copy ceiling, and the per-kernel profile of a Q4_0 step.
# About 6 minutes from a cold machine.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests activation_rounding_test cuda_backend_test block_linear_test gpu_model_test cuda_sampling_test \
  cuda_kv_format_test prefill_attention_test kivi_kv_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in "" :F8_E4M3 :Q8_0 :Q4_0 :Q4_K; do gpu_step "random:llama-3-8b$t" 1 --model random:llama-3-8b$t; done
echo "steps done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 KVS_SKIP_STEPS=1 KVS_SKIP_GEMV_PROFILE=1 KVS_PROFILE_LAUNCHES=700 bash "$(dirname "$0")/gpu_step_profile.sh" :Q4_0 \
  | grep -vE "^## random|decode steps"
echo "total $(( $(date +%s) - start )) s"
