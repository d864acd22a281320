#!/usr/bin/env bash
# Whole decode steps on Llama-3-8B's shape beside the copy ceiling, in one call (device tool,
# carrying .deps): batch 1 for every weight format issue 21 names (bf16, F8_E4M3, Q8_0, Q4_0, Q4_K;
# the step's weight + KV bytes over the copy rate is its share of the memory floor), batch 32 for
# bf16 / int4 KV / F8_E4M3 / Q4_K; first the tests of what changed (the decoded-first prefill, the
# KIVI seal's slices).
# Usage: bash scripts/gpu_step_checks.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests prefill_attention_test kivi_kv_test gpu_model_test
grep -E "^prefill .*decoded" "$OUT/prefill_attention_test.log" | awk '{print $2, $(NF-3)}' | sort | uniq -c | head
gpu_copy_ceiling
for t in "" :F8_E4M3 :Q8_0 :Q4_0 :Q4_K; do gpu_step "random:llama-3-8b$t" 1 --model random:llama-3-8b$t; done
gpu_step "bf16" 32 --model random:llama-3-8b
gpu_step "bf16, int4 KV" 32 --model random:llama-3-8b --kv-dtype int4
gpu_step "F8_E4M3" 32 --model random:llama-3-8b:F8_E4M3
gpu_step "Q4_K" 32 --model random:llama-3-8b:Q4_K
echo "total $(( $(date +%s) - start )) s"
