#!/usr/bin/env bash
# The follow-up device call of 2026-12-05 (ninth session), after gpu_first_checks.sh found the FP8
# GEMM refused by cuBLASLt and the block GEMM slower than the bf16 tiles: one build, the probe of
# cuBLASLt's FP8 scale modes, the two tests that failed, then whole decode steps per weight type and
# KV format with bf16 beside them in the same call.
# Usage: bash scripts/gpu_second_checks.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
nvcc -std=c++17 -o /tmp/probe scripts/probe_cublaslt_fp8.cu -lcublasLt -lcublas && /tmp/probe > "$OUT/probe.txt" 2>&1
grep -iE "^cuBLASLt|success, [1-9]" "$OUT/probe.txt" | head -40
gpu_tests block_linear_test gpu_model_test
grep -hE "GEMMs on FP8|GPU vs CPU" "$OUT"/block_linear_test.log "$OUT"/gpu_model_test.log | grep -E "F8|GEMMs" | head -12
python3 tests/reference/make_fp8_checkpoint_transformers.py tests/goldens/models/tiny-llama31 \
  /tmp/tiny-llama31-fp8-transformers 2>&1 | tail -1 \
  && tar cf "$OUT/tiny-llama31-fp8-transformers.tar" -C /tmp tiny-llama31-fp8-transformers
echo "tests done at $(( $(date +%s) - start )) s"
step() {  # label, then bench flags
  local label=$1; shift
  echo "## $label"
  timeout 90 $K bench --device cuda --input-len 512 --output-len 128 "$@" 2>&1 | grep -E "^\| (offline|decode)|rror"
}
step "bf16 weights, batch 1" --model random:llama-3-8b --num-prompts 1 --max-seqs 1
step "F8_E4M3 weights, batch 1" --model random:llama-3-8b:F8_E4M3 --num-prompts 1 --max-seqs 1
step "bf16 weights, batch 32" --model random:llama-3-8b --num-prompts 32 --max-seqs 32
step "F8_E4M3 weights, batch 32" --model random:llama-3-8b:F8_E4M3 --num-prompts 32 --max-seqs 32
step "Q4_K weights, batch 32 (bf16 tiles)" --model random:llama-3-8b:Q4_K --num-prompts 32 --max-seqs 32
step "bf16 weights, int4 KV, batch 32" --model random:llama-3-8b --num-prompts 32 --max-seqs 32 --kv-dtype int4
echo "total $(( $(date +%s) - start )) s"
