#!/usr/bin/env bash
# A session's first device call, when nothing new waits for a GPU: every GPU kernel test that the
# thirteenth session's calls ran (the block GEMM's, the model's, the backend's, both attention
# tests, KIVI's) and the timings that the README quotes for quantized weights (gpu_block_gemm_check.sh:
# the block GEMM, pipelined by default at 9-32 tokens but for Q8_0, beside the one-stage kernel and
# the bf16 tiles), the batch-128 steps, then the batch-1 steps of every weight format beside the
# copy ceiling. About 330 s on an H100 from a cold machine.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
bash "$(dirname "$0")/gpu_block_gemm_check.sh"
source "$(dirname "$0")/gpu_common.sh"
source "$BUILD/env.sh"
gpu_tests cuda_backend_test prefill_attention_test kivi_kv_test
for t in Q4_K Q4_0; do gpu_step "$t" 128 --model random:llama-3-8b:$t; done
gpu_copy_ceiling
for t in "" :F8_E4M3 :Q8_0 :Q4_0 :Q4_K; do gpu_step "random:llama-3-8b$t" 1 --model random:llama-3-8b$t; done
echo "total $(( $(date +%s) - start )) s"
