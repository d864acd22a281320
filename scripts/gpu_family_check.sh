#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps): the Qwen3 and Gemma 3 families on the CUDA backend
# (issue 25). Builds, runs the op tests (q/k head norms, bf16 row norm, GeGLU, embedding scale,
# the generic kernel for sliding-window layers and head_dim 96/256, each element against the CPU)
# and the model tests (tiny Qwen3 / Gemma 3 checkpoints against transformers' float32 logits),
# then times a batch-1 decode step and a long prefill on Gemma 3 270M's and Qwen3-8B's shapes
# (random weights) beside Llama-3-8B's, in the same call.
# Usage: bash scripts/gpu_family_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test gpu_model_test
grep -E "worst element / tolerance|window=|tiny-(qwen3|gemma3) on GPU" "$OUT"/cuda_backend_test.log "$OUT"/gpu_model_test.log | sed 's|.*/||' | head -20
for spec in random:gemma-3-270m random:qwen3-8b random:llama-3-8b; do
  echo "## $spec: batch 1, 512 in / 128 out"
  timeout 200 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts 1 --max-seqs 1 2>&1 | grep -E "^\| (offline|decode|ttft_ms)|rror" | head -4
done
echo "## random:gemma-3-270m: one 16,384-token prompt (12 windowed layers of 512, 3 global)"
timeout 200 $K bench --device cuda --model random:gemma-3-270m --input-len 16384 --output-len 1 --num-prompts 1 \
  --max-tokens-per-step 8192 2>&1 | grep -E "^\| (offline|ttft_ms)|rror" | head -4
echo "total $(( $(date +%s) - start )) s"
