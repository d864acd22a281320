#!/usr/bin/env bash
# Batch-1 decode steps of the Llama-3-8B shape (512 in / 128 out) under several settings of one
# build, alternating within each round, beside the copy ceiling: the A/B of a measurement knob.
# First the tests named in TESTS (default: block_linear_test gpu_model_test).
# Usage: MODELS="random:llama-3-8b:Q4_0 ..." ROUNDS=2 bash scripts/gpu_step_ab.sh "ENV=A" "ENV=B" ...
#   (device tool, carrying .deps; a setting may hold several ENV=VALUE pairs separated by spaces)
# BATCHES="1 32" times other batch sizes too.
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
# shellcheck disable=SC2086
gpu_tests ${TESTS-block_linear_test gpu_model_test}
gpu_copy_ceiling
read -r -a models <<< "${MODELS:-random:llama-3-8b:Q4_0 random:llama-3-8b:F8_E4M3 random:llama-3-8b}"
for round in $(seq "${ROUNDS:-2}"); do
  for m in "${models[@]}"; do
    for setting in "$@"; do
      # gpu_step's run under this setting's environment (a subshell, so it does not leak).
      # shellcheck disable=SC2086
      for n in ${BATCHES:-1}; do
        (export $setting && gpu_step "round $round | $m | $setting" "$n" --model "$m")
      done
    done
  done
done
echo "total $(( $(date +%s) - start )) s"
