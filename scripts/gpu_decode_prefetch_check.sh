#!/usr/bin/env bash
# The bf16 decode attention's L2 prefetch before its wait (PrefetchSplitKeys): the GPU tests that
# run it, then `bench --kernel attention` at batch-1 and 32 x 4K shapes and the batch-1 Q4_0 step
# with the prefetch and without (KVS_DECODE_PREFETCH=off), beside the copy ceiling, and the Q4_0
# step's kernel timeline. About 5 minutes from a cold machine.
# Usage: bash scripts/gpu_decode_prefetch_check.sh   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
gpu_build
gpu_tests cuda_backend_test gpu_model_test cuda_kv_format_test
gpu_copy_ceiling
for shape in "1 640" "1 32768" "32 4096"; do
  set -- $shape
  for f in on off; do
    echo "## attention batch $1 context $2, prefetch $f"
    KVS_DECODE_PREFETCH=$f $K bench --device cuda --model random:llama-3-8b --kernel attention --batch $1 --context $2 \
      --iters 50 2>&1 | grep -E "^\|" | tail -1
  done
done
for f in on off; do KVS_DECODE_PREFETCH=$f gpu_step "random:llama-3-8b:Q4_0, prefetch $f" 1 --model random:llama-3-8b:Q4_0; done
KVS_SKIP_BUILD=1 bash "$(dirname "$0")/gpu_timeline.sh" random:llama-3-8b:Q4_0 | grep -v "^| ceiling"
