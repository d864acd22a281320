#!/usr/bin/env bash
# A session's first device call for the decode path: the GPU tests that read it, the batch-1 steps
# of every weight format beside the copy ceiling, and the kernel timelines of the graphed Q4_0 and Q4_K steps
# (scripts/gpu_timeline.sh: each kernel's share of the step as it runs). About 6 minutes from a
# cold machine.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests activation_rounding_test block_linear_test gpu_model_test cuda_backend_test cuda_sampling_test \
  cuda_kv_format_test prefill_attention_test
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for t in "" :F8_E4M3 :Q8_0 :Q4_0 :Q4_K; do gpu_step "random:llama-3-8b$t" 1 --model random:llama-3-8b$t; done
echo "steps done at $(( $(date +%s) - start )) s"
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_timeline.sh" random:llama-3-8b:Q4_0 random:llama-3-8b:Q4_K
