#!/usr/bin/env bash
# Decode attention's key splits merged in a thread-block cluster (KVS_DECODE_MERGE=cluster) against
# the merge kernel (off), one build: the attention tests (both merges, bit for bit), decode
# attention alone at the batch-1 step's context lengths and at 32 x 4K, fp8 beside bf16, then
# batch-1 steps of the Llama-3-8B shape, alternating, beside the copy ceiling.
# Usage: bash scripts/gpu_cluster_merge_check.sh   (device tool, carrying .deps)
#   MODELS="random:llama-3-8b:Q4_0 ..." ROUNDS=2; KVS_SKIP_BUILD=1 on a warm machine.
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_tests ${TESTS-cuda_kv_format_test activation_rounding_test gpu_model_test}
if [ -z "${TESTS+x}" ]; then
  echo "## gpu_model_test with the cluster merge"; (export KVS_DECODE_MERGE=cluster; gpu_tests gpu_model_test)
fi
gpu_copy_ceiling
for shape in "1 640 bf16" "1 1000 bf16" "1 640 fp8" "32 4096 bf16" "8 1024 bf16"; do
  set -- $shape
  for merge in off cluster; do
    echo -n "merge=$merge batch $1 context $2 kv $3: "
    KVS_DECODE_MERGE=$merge timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention \
      --batch $1 --context $2 --kv-dtype $3 --iters 200 2>&1 | grep -E '^\||rror' | tail -1
  done
done
read -r -a models <<< "${MODELS:-random:llama-3-8b:Q4_0 random:llama-3-8b:F8_E4M3}"
for round in $(seq "${ROUNDS:-2}"); do
  for m in "${models[@]}"; do
    for merge in off cluster; do
      (export KVS_DECODE_MERGE=$merge && gpu_step "round $round | $m | merge=$merge" 1 --model "$m")
    done
  done
done
echo "total $(( $(date +%s) - start )) s"
