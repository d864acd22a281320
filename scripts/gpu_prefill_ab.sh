#!/usr/bin/env bash
# On one GPU (device tool, carrying .deps): the Hopper prefill kernel with its defaults against the
# same build with each group of settings given (environment assignments, one argument a side),
# alternating, on the shapes of issue 20's targets, with torch SDPA in the same call; then the
# 65,536-token prompt's time to first token every way. Builds and runs the element-wise prefill
# test under every side first (KVS_AB_TEST_DEFAULT_ONLY=1: under the defaults alone, for a setting
# the test already covers; KVS_AB_NO_TESTS=1: under none, for a call that ran them itself).
# KVS_AB_QUICK=1 skips the other tests and the prompt; KVS_AB_MODEL_TEST_SIDES=1 (below) runs
# gpu_model_test under every side.
# Usage: bash scripts/gpu_prefill_ab.sh "KVS_WGMMA_BLOCKS=item"
#        bash scripts/gpu_prefill_ab.sh "KVS_WGMMA_KV=copies" "KVS_WGMMA_BLOCKS=item"
source "$(dirname "$0")/gpu_common.sh"
SIDES=("" "$@")
QUICK=${KVS_AB_QUICK:-}
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
# The element-wise prefill test on every side; a kernel that hangs or fails stops the call here
# (each run has 240 s).
for i in "${!SIDES[@]}"; do
  SIDE_ENV=${SIDES[$i]}
  [ -z "${KVS_AB_NO_TESTS:-}" ] || continue
  [ "$i" = 0 ] || [ -z "${KVS_AB_TEST_DEFAULT_ONLY:-}" ] || continue
  log="$OUT/prefill_attention_test.side$i.log"
  env $SIDE_ENV timeout 240 "$BUILD"/tests/prefill_attention_test > "$log" 2>&1
  rc=$?
  echo "prefill_attention_test (${SIDE_ENV:-default}): rc $rc, worst $(grep -oE 'worst error [0-9.]+' "$log" | sort -k3 -n | tail -1)"
  [ $rc = 0 ] || { grep -E "Failure|RUN|FAILED" "$log" | tail -12; exit 1; }
done
[ -n "$QUICK" ] || gpu_tests cuda_backend_test cuda_kv_format_test gpu_model_test
# KVS_AB_MODEL_TEST_SIDES=1: gpu_model_test (greedy tokens end to end) under every other side too,
# for a side that may become the default in this call's light.
if [ -n "${KVS_AB_MODEL_TEST_SIDES:-}" ]; then
  for i in "${!SIDES[@]}"; do
    [ "$i" = 0 ] && continue
    env ${SIDES[$i]} timeout 300 "$BUILD"/tests/gpu_model_test > "$OUT/gpu_model_test.side$i.log" 2>&1 \
      && echo "gpu_model_test (${SIDES[$i]}): ok" \
      || { echo "gpu_model_test (${SIDES[$i]}): FAILED"; grep -E "Failure|FAILED" "$OUT/gpu_model_test.side$i.log" | head -8; }
  done
fi
echo "tests done at $(( $(date +%s) - start )) s"

gpu_sdpa_ceiling | tee "$OUT/sdpa.txt"

bench() {  # label, then bench flags; the side's settings from $SIDE_ENV
  local label=$1; shift
  env $SIDE_ENV $K bench --device cuda --kernel prefill --batch 1 "$@" | grep "^|" \
    | sed "s/^| causal prefill attention | cuda:0 ([^)]*)/| $label/"
}
L8=(--model random:llama-3-8b)
for round in 1 2; do
  for SIDE_ENV in "${SIDES[@]}"; do
    label=${SIDE_ENV:-default}
    bench "$label" "${L8[@]}" --context 4096 --iters 10
    bench "$label" "${L8[@]}" --context 4096 --kv-dtype fp8 --iters 10
    bench "$label" "${L8[@]}" --context 16384 --iters 5
    [ $round = 1 ] || continue
    bench "$label" "${L8[@]}" --context 16384 --kv-dtype fp8 --iters 5
    bench "$label" "${L8[@]}" --context 65536 --query-len 2048 --iters 5
    bench "$label" --model random:smollm2-135m --context 16384 --iters 5
  done
done 2>&1 | tee "$OUT/prefill_ab.txt"
echo "benches done at $(( $(date +%s) - start )) s"

if [ -z "$QUICK" ]; then
  for SIDE_ENV in "${SIDES[@]}"; do
    echo "== ${SIDE_ENV:-default}: 65,536-token prompt"
    ([ -z "$SIDE_ENV" ] || export $SIDE_ENV; gpu_long_prompt 8192)
  done | tee "$OUT/ttft64k.txt"
fi
echo "total $(( $(date +%s) - start )) s"
