#!/usr/bin/env bash
# Where a graphed batch-1 decode step's time goes, kernel by kernel, as it runs (issue 21, item 4):
# scripts/kernel_timeline.cc (a CUPTI injection library: every kernel's start and end, graph nodes
# included) around `bench`, then scripts/kernel_timeline.py per run. Each run's own decode-step line
# (traced) is printed beside an untraced one, to show what the tracing costs.
# Usage: bash scripts/gpu_timeline.sh [MODEL[,ENV=VALUE]...]   (device tool, carrying .deps)
#   default: random:llama-3-8b:Q4_0 random:llama-3-8b:Q4_K random:llama-3-8b:F8_E4M3 random:llama-3-8b
source "$(dirname "$0")/gpu_common.sh"
[ -n "${KVS_SKIP_BUILD:-}" ] && source "$BUILD/env.sh" || gpu_build
gpu_timeline_lib || exit 1
runs=("$@")
[ ${#runs[@]} = 0 ] && runs=(random:llama-3-8b:Q4_0 random:llama-3-8b:Q4_K random:llama-3-8b:F8_E4M3 random:llama-3-8b)
gpu_copy_ceiling
for run in "${runs[@]}"; do
  IFS=, read -r model envs <<< "$run"
  csv=/tmp/timeline_$(echo "$run" | tr -c 'A-Za-z0-9_\n' _).csv
  echo "## $run"
  env $envs timeout 150 $K bench --device cuda --model "$model" --input-len 512 --output-len 128 --num-prompts 1 \
    --max-seqs 1 2>&1 | grep -E "^\| decode" | sed 's/^/untraced: /'
  env $envs CUDA_INJECTION64_PATH=/tmp/libkvs_timeline.so KVS_TIMELINE_OUT=$csv timeout 150 $K bench --device cuda \
    --model "$model" --input-len 512 --output-len 128 --num-prompts 1 --max-seqs 1 2>&1 | grep -E "^\| decode|rror" \
    | sed 's/^/traced:   /'
  python3 scripts/kernel_timeline.py "$csv" "$run"
  cp "$csv" "$OUT/" 2> /dev/null
done
echo "total $(( $(date +%s) - start )) s"
