#!/usr/bin/env bash
# The first device call of a session after code written without a GPU (2026-12-05): one build,
# every test of the new GPU paths, then the few timings that say whether each one pays, in the
# order that matters if the call runs out of time. Each part is a separate script too; this one is
# for spending the least device time (no second build).
#   1. tests: kivi_kv_test (int4/int2 decode on tensor cores beside the CUDA-core kernel, the sink
#      cases), prefill_attention_test (both quantized-tile loaders), block_linear_test (the block GEMM, the FP8 GEMV and cuBLASLt GEMM, per type),
#      cuda_kv_format_test (the prefill tolerance), cuda_backend_test, gpu_model_test
#   2. decode attention, 8 x 128K / 32 x 4K: int4 and int2 on tensor cores and on CUDA cores,
#      int4-token beside them (issue 24's target); Hopper prefill at 16K over fp8/int8/int4-token
#      caches, codes staged in place against codes through registers, bf16 beside (issue 20)
#   3. linear layers, Llama-3-8B shape: Q4_K, Q4_0 and F8_E4M3 at 1 / 32 / 128 tokens, block GEMM
#      and FP8 GEMM against the bf16 tiles and bf16 weights (issue 21)
#   4. the batch-1 decode step per type (issue 21's 420 tok/s fp8 target) and batch 32
#   5. tiny-llama31 quantized by transformers (scripts/gpu_fp8_transformers.sh) into $OUT
# Usage: bash scripts/gpu_first_checks.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests kivi_kv_test block_linear_test prefill_attention_test cuda_kv_format_test cuda_backend_test gpu_model_test
grep -hE "worst element|GEMMs on FP8|GPU vs CPU" "$OUT"/kivi_kv_test.log "$OUT"/block_linear_test.log \
  "$OUT"/gpu_model_test.log 2>/dev/null | head -60
echo "tests done at $(( $(date +%s) - start )) s"
gpu_copy_ceiling
for kv in int4-token int4 int2 int4:cuda-cores int2:cuda-cores; do
  for shape in "8 131072" "32 4096"; do
    set -- $shape
    echo "## $kv $1 x $2"
    KVS_KIVI_DECODE=${kv#*:} timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention \
      --batch $1 --context $2 --iters 20 --kv-dtype ${kv%%:*} 2>&1 | grep -E "^\||rror"
  done
done
echo "attention done at $(( $(date +%s) - start )) s"
# Hopper prefill over quantized caches: codes staged in place (the default) against the earlier
# path through registers, bf16 beside them (issue 20: fp8 >= bf16, int8/int4 >= 0.9x).
for kv in bf16 fp8 int8 int4-token fp8:registers int8:registers int4-token:registers; do
  echo "## prefill 16K $kv"
  KVS_WGMMA_CODES=${kv#*:} timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel prefill --batch 1 \
    --context 16384 --iters 5 --kv-dtype ${kv%%:*} 2>&1 | grep -E "^\||rror"
done
echo "prefill done at $(( $(date +%s) - start )) s"
for spec in random:llama-3-8b random:llama-3-8b:Q4_K random:llama-3-8b:Q4_0 random:llama-3-8b:F8_E4M3; do
  for b in 1 32 128; do
    echo "## $spec tokens $b"
    timeout 60 $K bench --device cuda --model $spec --kernel linear --batch $b --iters 20 2>&1 | grep -E "^\||rror"
    if [[ $spec == *:* && $b -gt 8 ]]; then
      echo "## $spec tokens $b, bf16 tiles"
      KVS_BLOCK_GEMM=bf16-tiles timeout 60 $K bench --device cuda --model $spec --kernel linear --batch $b --iters 20 \
        2>&1 | grep -E "^\||rror"
    fi
  done
done
echo "linear done at $(( $(date +%s) - start )) s"
for spec in random:llama-3-8b random:llama-3-8b:F8_E4M3 random:llama-3-8b:Q4_K; do
  for n in 1 32; do
    echo "## $spec batch $n"
    timeout 90 $K bench --device cuda --model $spec --input-len 512 --output-len 128 --num-prompts $n --max-seqs $n \
      2>&1 | grep -E "^\| (offline|decode)|rror"
  done
done
echo "steps done at $(( $(date +%s) - start )) s"
# One archive: the device tool brings back at most 8 files.
python3 tests/reference/make_fp8_checkpoint_transformers.py tests/goldens/models/tiny-llama31 \
  /tmp/tiny-llama31-fp8-transformers 2>&1 | tail -3 \
  && tar cf "$OUT/tiny-llama31-fp8-transformers.tar" -C /tmp tiny-llama31-fp8-transformers
echo "total $(( $(date +%s) - start )) s"
