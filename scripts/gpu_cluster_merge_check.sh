#!/usr/bin/env bash
# Two changes to a decode step's attention, one build, each a knob: the key splits merged in a
# thread-block cluster (KVS_DECODE_MERGE=cluster) and the step's rope + KV write done by the
# attention kernel (KVS_DECODE_ROPE=attention). First the tests that compare them bit for bit with
# the kernels they replace (and gpu_model_test with both on), then decode attention alone at the
# batch-1 step's context lengths and at 32 x 4K, then batch-1 steps of the Llama-3-8B shape under
# each setting, alternating, beside the copy ceiling.
# Usage: bash scripts/gpu_cluster_merge_check.sh   (device tool, carrying .deps)
#   STEPS=0 skips the steps; TESTS="" and BENCH=0 skip those; KVS_SKIP_BUILD=1 on a warm machine;
#   MODELS="random:llama-3-8b:Q4_0 ..." ROUNDS=2 (ROUNDS_LAST=1: the last model one round).
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_tests ${TESTS-cuda_backend_test cuda_kv_format_test activation_rounding_test}
if [ -z "${TESTS+x}" ]; then
  echo "## gpu_model_test with both on"
  (export KVS_DECODE_MERGE=cluster KVS_DECODE_ROPE=attention; gpu_tests gpu_model_test)
fi
gpu_copy_ceiling
if [ "${BENCH:-1}" != 0 ]; then
  for shape in "1 640 bf16" "1 640 fp8" "32 4096 bf16" "8 1024 bf16"; do
    set -- $shape
    for merge in off cluster; do
      echo -n "merge=$merge batch $1 context $2 kv $3: "
      KVS_DECODE_MERGE=$merge timeout 60 $K bench --device cuda --model random:llama-3-8b --kernel attention \
        --batch $1 --context $2 --kv-dtype $3 --iters 200 2>&1 | grep -E '^\||rror' | tail -1
    done
  done
fi
settings=("KVS_DECODE_MERGE=off" "KVS_DECODE_MERGE=cluster" "KVS_DECODE_ROPE=attention"
          "KVS_DECODE_MERGE=cluster KVS_DECODE_ROPE=attention")
read -r -a models <<< "${MODELS:-random:llama-3-8b:Q4_0 random:llama-3-8b:F8_E4M3}"
[ "${STEPS:-1}" = 0 ] && models=()
for round in $(seq "${ROUNDS:-2}"); do
  for m in "${models[@]}"; do
    [ -n "${ROUNDS_LAST:-}" ] && [ "$round" -gt "$ROUNDS_LAST" ] && [ "$m" = "${models[-1]}" ] && continue
    for setting in "${settings[@]}"; do
      # shellcheck disable=SC2086
      (export $setting && gpu_step "round $round | $m | $setting" 1 --model "$m")
    done
  done
done
echo "total $(( $(date +%s) - start )) s"
