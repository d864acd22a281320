#!/usr/bin/env bash
# On the GPU machine: build, the KV-format GPU tests (and the CUDA regression tests), the
# transformers RoPE goldens, then decode-attention / prefill / end-to-end benchmarks for every
# --kv-dtype. Usage (device tool, carrying .deps): bash scripts/gpu_kv_bench.sh
source "$(dirname "$0")/gpu_common.sh"
gpu_build
python3 tests/reference/make_rope_goldens.py tests/goldens/rope/llama31_long_positions.json > "$OUT/rope_goldens.log" 2>&1 \
  && cp tests/goldens/rope/llama31_long_positions.json "$OUT/" || tail -5 "$OUT/rope_goldens.log"
gpu_tests ${KVS_GPU_TESTS:-cuda_kv_format_test rope_long_context_test kv_codec_test cuda_backend_test gpu_model_test}
grep -E "^kv " "$OUT/cuda_kv_format_test.log" | sort | head -60
echo "tests done at $(( $(date +%s) - start )) s"

{
  for kv in bf16 fp8 int8 int4-token fp16; do
    for shape in "1 32768" "32 4096" "64 8192" "8 131072"; do
      set -- $shape
      timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 --iters 30 --kv-dtype $kv
    done
  done
  for kv in bf16 fp8 int8 int4-token; do  # Llama-2-7B shape (MHA: the register decode kernel) at 256K
    timeout 60 $K bench --device cuda --model random:llama-2-7b-256k --kernel attention --batch 1 --context 262144 --iters 10 --kv-dtype $kv
  done
  for kv in bf16 fp8 int8 int4-token; do
    timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel prefill --batch 1 --context 16384 --iters 3 --kv-dtype $kv
  done
  for kv in bf16 int8 int4-token; do
    timeout 90 $K bench --device cuda --model random:llama-3-8b --input-len 7936 --output-len 128 --num-prompts 32 \
      --max-seqs 32 --max-tokens-per-step 8192 --kv-dtype $kv
  done
} 2>&1 | tee "$OUT/bench.txt"
echo "all done at $(( $(date +%s) - start )) s"
