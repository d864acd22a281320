# Sourced by the scripts/gpu_*.sh scripts (run on the GPU machine through the device tool): the
# repository root as working folder, CUDA on PATH, logs under $OUT, and two helpers.
#   gpu_build          builds (SmolLM2 not fetched: no network there), prints the build time
#   gpu_tests T1 T2..  runs those test binaries, one log each under $OUT, a line per verdict
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/kvs-out}
mkdir -p "$OUT"
start=$(date +%s)
K=./build/launcher/kvshard

gpu_build() {
  KVS_SKIP_MODEL=1 bash scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  source build/env.sh
  echo "built in $(( $(date +%s) - start )) s"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
}

gpu_tests() {
  for t in "$@"; do
    timeout 300 ./build/tests/$t > "$OUT/$t.log" 2>&1 && echo "$t: ok" \
      || { echo "$t: FAILED"; grep -E 'Failure|Expected|Which|FAILED|differ' "$OUT/$t.log" | head -20; }
  done
}
