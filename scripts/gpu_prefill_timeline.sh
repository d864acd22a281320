#!/usr/bin/env bash
# Where a long prompt's time to first token goes (issue 20): the 65,536-token prompt on
# random:llama-3.1-8b under scripts/kernel_timeline.cc (every kernel's start and end), summed by
# kind with scripts/kernel_time_by_kind.py; beside it the untraced time to first token at the
# step sizes given (default 8192 and 16384 tokens a step).
# Usage: bash scripts/gpu_prefill_timeline.sh [STEP_TOKENS...]   (device tool, carrying .deps)
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_timeline_lib || exit 1
steps=("$@")
[ ${#steps[@]} = 0 ] && steps=(8192 16384)
prompt() {  # step tokens, then env assignments
  local step=$1; shift
  env "$@" timeout 200 $K bench --device cuda --model random:llama-3.1-8b --input-len 65536 --output-len 1 \
    --num-prompts 1 --max-tokens-per-step "$step" > /tmp/prompt.log 2>&1 \
    ; grep -E "^\| ttft" /tmp/prompt.log || tail -3 /tmp/prompt.log  # no result: say why
}
for step in "${steps[@]}"; do
  echo "## untraced, $step tokens a step"; prompt "$step"
done
echo "## traced, ${steps[0]} tokens a step"
prompt "${steps[0]}" CUDA_INJECTION64_PATH=/tmp/libkvs_timeline.so KVS_TIMELINE_OUT=/tmp/prefill_timeline.csv
python3 scripts/kernel_time_by_kind.py /tmp/prefill_timeline.csv "65,536-token prompt, ${steps[0]} a step" --long-prompt
echo "total $(( $(date +%s) - start )) s"
