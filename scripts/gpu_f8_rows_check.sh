#!/usr/bin/env bash
# F8_E4M3 weights as split rows (codes, then scales; f8_linear.cu): the block-weight tests, the
# model test's F8 presets and the Dequantize test, then the FP8 GEMM's matrices and whole decode
# steps beside bf16 in one call; and a replay of the prefill test's fp8 seed that missed its
# tolerance on 2026-12-05 (all three Hopper paths alike). (device tool, carrying .deps)
# Usage: bash scripts/gpu_f8_rows_check.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests block_linear_test gpu_model_test cuda_backend_test
grep -hE "GEMMs on FP8" "$OUT"/block_linear_test.log | sort | uniq -c
KVS_TEST_SEED=3771173526 timeout 120 "$BUILD"/tests/prefill_attention_test --gtest_filter='*bs16_0' > "$OUT/replay.log" 2>&1
grep -E "^prefill fp8|token [0-9]+ head|OK \]|FAILED \]" "$OUT/replay.log" | head -8
gpu_copy_ceiling
for b in 32 512; do
  for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3; do
    echo "## $spec, $b tokens"
    $K bench --device cuda --model $spec --kernel linear --batch $b --iters 20 2>&1 | grep -E "^\||rror" | tail -3
  done
done
for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3; do
  for n in 1 32; do
    echo "## $spec, batch $n"
    timeout 150 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts $n --max-seqs $n \
      2>&1 | grep -E "^\| decode|rror|cuBLASLt" | head -3
  done
done
echo "total $(( $(date +%s) - start )) s"
