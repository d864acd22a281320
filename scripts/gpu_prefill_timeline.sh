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
for step in "${steps[@]}"; do
  echo "## untraced, $step tokens a step"; gpu_long_prompt "$step"
done
echo "## traced, ${steps[0]} tokens a step"
CUDA_INJECTION64_PATH=/tmp/libkvs_timeline.so KVS_TIMELINE_OUT=/tmp/prefill_timeline.csv gpu_long_prompt "${steps[0]}"
python3 scripts/kernel_time_by_kind.py /tmp/prefill_timeline.csv "65,536-token prompt, ${steps[0]} a step" --long-prompt
echo "total $(( $(date +%s) - start )) s"
