#!/usr/bin/env bash
# On one GPU (device tool, carrying .deps and .ab-base): the Hopper prefill of this tree against
# another commit's, each built into its own folder, alternating on issue 20's shapes with torch
# SDPA in the same call, then the 65,536-token prompt each way, twice. For a change that cannot
# sit behind an environment switch in one build (gpu_prefill_ab.sh), or to check that a switch's
# old side still runs as fast as the commit it came from. No tests run here.
# Usage (the other commit as a tarball, made here first):
#   mkdir -p .ab-base && git archive REV | gzip > .ab-base/base.tar.gz
#   bash scripts/gpu_prefill_vs_base.sh        # KVS_SKIP_BUILD=1: this tree's build is current
source "$(dirname "$0")/gpu_common.sh"
[ -f .ab-base/base.tar.gz ] || { echo "no .ab-base/base.tar.gz (carry .ab-base)"; exit 1; }
if [ -n "${KVS_SKIP_BUILD:-}" ]; then source "$BUILD/env.sh"; else KVS_BUILD_TARGETS=${KVS_BUILD_TARGETS:-kvshard} gpu_build; fi
BASE=/tmp/kvs-base
sum=$(md5sum < .ab-base/base.tar.gz | cut -c1-32)
if [ "$(cat $BASE/.tarball 2>/dev/null)" != "$sum" ] || [ ! -x $BASE/build/launcher/kvshard ]; then
  rm -rf $BASE && mkdir -p $BASE && tar -xzf .ab-base/base.tar.gz -C $BASE && cp -a .deps $BASE/ 2>/dev/null
  (cd $BASE && KVS_SKIP_MODEL=1 KVS_BUILD_TARGETS=kvshard bash scripts/setup.sh) > "$OUT/base_build.log" 2>&1 \
    || { tail -20 "$OUT/base_build.log"; exit 1; }
  echo "$sum" > $BASE/.tarball
fi
echo "both built at $(( $(date +%s) - start )) s"
THIS=$K
gpu_sdpa_ceiling | tee "$OUT/sdpa.txt"
bench() {  # label, binary, then bench flags
  local label=$1 bin=$2; shift 2
  $bin bench --device cuda --kernel prefill --batch 1 "$@" | grep "^|" \
    | sed "s/^| causal prefill attention | cuda:0 ([^)]*)/| $label/"
}
L8=(--model random:llama-3-8b)
for round in 1 2; do
  for side in this base; do
    bin=$THIS; [ $side = base ] && bin=$BASE/build/launcher/kvshard
    bench $side $bin "${L8[@]}" --context 4096 --iters 10
    bench $side $bin "${L8[@]}" --context 4096 --kv-dtype fp8 --iters 10
    bench $side $bin "${L8[@]}" --context 16384 --iters 5
    bench $side $bin "${L8[@]}" --context 16384 --kv-dtype fp8 --iters 5
    bench $side $bin "${L8[@]}" --context 65536 --query-len 2048 --iters 5
    bench $side $bin --model random:smollm2-135m --context 16384 --iters 5
  done
done 2>&1 | tee "$OUT/prefill_vs_base.txt"
for round in 1 2; do
  for side in this base; do
    echo "== $side: 65,536-token prompt"
    K=$THIS; [ $side = base ] && K=$BASE/build/launcher/kvshard
    gpu_long_prompt 8192
  done
done | tee "$OUT/ttft64k.txt"
echo "total $(( $(date +%s) - start )) s"
