#!/usr/bin/env bash
# The next session's first device call (written 2026-12-05, twelfth session, when no device time
# was left): the pipelined block GEMM (block_gemm.cu's PipelinedBlockGemmKernel, opt-in:
# KVS_BLOCK_GEMM_PIPELINE=on) against the CPU in block_linear_test and timed beside the block GEMM
# and the bf16 tiles (gpu_block_gemm_check.sh); then the batch-128 Q4_K step after 237e2db (the
# default's block GEMM stops at 32 tokens), which the last llama.cpp comparison ran before; and the
# batch-1 steps of every weight format with the GEMVs' grids sized per kernel (gemv_common.cuh's
# ResidentBlocks had given every GEMV the resident count of the first one launched). Also the
# attention tests: their cp.async helpers moved to cp_async.cuh (same instructions) after the last call.
# Usage: bash scripts/gpu_next_checks.sh   (device tool, carrying .deps)
bash "$(dirname "$0")/gpu_block_gemm_check.sh"
source "$(dirname "$0")/gpu_common.sh"
source "$BUILD/env.sh"
gpu_tests cuda_backend_test prefill_attention_test kivi_kv_test
for t in Q4_K Q4_0; do gpu_step "$t" 128 --model random:llama-3-8b:$t; done
gpu_copy_ceiling
for t in "" :F8_E4M3 :Q8_0 :Q4_0 :Q4_K; do gpu_step "random:llama-3-8b$t" 1 --model random:llama-3-8b$t; done
echo "total $(( $(date +%s) - start )) s"
