#!/usr/bin/env bash
# kvshard's CPU backend beside llama.cpp's CPU build, same GGUF file, same machine, one run:
# load -> first token (wall time of a one-token generation), prompt tok/s (pp128) and decode tok/s
# (tg64), at 1 and 2 threads; kvshard's fast path (--device cpu) and its float32 reference
# (--device cpu-reference). Then the same with a second CPU-heavy process on the machine.
#
# llama.cpp is a benchmark peer, never a dependency: it is built here from the PyPI sdist of
# llama-cpp-python (vendor/llama.cpp), llama-bench only, into $LLAMA_DIR (default /tmp/llama-cpu;
# ~10 minutes on 2 cores the first time).
#
# usage: scripts/cpu_bench.sh [model.gguf]   (default: SmolLM2-135M-Instruct Q4_1, the CI model)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
LLAMA_DIR=${LLAMA_DIR:-/tmp/llama-cpu}
KVS=${KVS_BUILD_DIR:-build}/launcher/kvshard
[ -x "$KVS" ] || { echo "build kvshard first (scripts/setup.sh)" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "no model at $MODEL (scripts/fetch_model.sh)" >&2; exit 1; }

LLAMA_BENCH=$(ls "$LLAMA_DIR"/src/*/vendor/llama.cpp/build/bin/llama-bench 2>/dev/null | head -1 || true)
if [ -z "$LLAMA_BENCH" ]; then
  echo "[cpu-bench] building llama.cpp's llama-bench (CPU) in $LLAMA_DIR"
  # Without AMX: -march=native enables it where the CPU reports it (Sapphire Rapids), but a VM
  # that does not grant the tile state kills llama-bench at its first tile instruction (SIGILL).
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  mkdir -p "$LLAMA_DIR/src"
  python3 -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$LLAMA_DIR"
  tar xzf "$LLAMA_DIR"/llama_cpp_python-0.3.36.tar.gz -C "$LLAMA_DIR/src"
  SRC=$(ls -d "$LLAMA_DIR"/src/*/vendor/llama.cpp)
  cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON \
    -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" >/dev/null
  cmake --build "$SRC/build" -j "$(nproc)" --target llama-bench >/dev/null
  LLAMA_BENCH="$SRC/build/bin/llama-bench"
fi

# llama.cpp: mean tok/s of pp128 and tg64 over 3 repetitions.
llama_rates() {  # threads -> "pp tg"
  "$LLAMA_BENCH" -m "$MODEL" -t "$1" -p 128 -n 64 -r 3 -o csv 2>/dev/null |
    python3 -c 'import csv,sys; r={row["n_prompt"]+"/"+row["n_gen"]: float(row["avg_ts"]) for row in csv.DictReader(sys.stdin)}; print("%.1f %.1f" % (r["128/0"], r["0/64"]))'
}
# kvshard: one request of 128 prompt tokens and 64 generated, 3 times (llama-bench repeats 3 times
# too): prefill rate from the time to first token, decode rate from the mean decode step; medians.
kvs_rates() {  # device threads -> "pp tg"
  for rep in 1 2 3; do
    KVS_THREADS=$2 "$KVS" bench --model "$MODEL" --device "$1" --input-len 128 --output-len 64 --num-prompts 1 2>&1
  done | python3 -c '
import re, statistics, sys
t = sys.stdin.read()
ttft = [float(x) for x in re.findall(r"ttft_ms \| p50 ([0-9.]+)", t)]
step = [float(x) for x in re.findall(r"decode steps .*?\| ([0-9.]+) ms/step", t)]
print("%.1f %.1f" % (128 / (statistics.median(ttft) / 1000), 1000 / statistics.median(step)))'
}
load_s() {  # device threads -> seconds from start to the first token's exit
  local t0 t1
  t0=$(date +%s.%N)
  KVS_THREADS=$2 "$KVS" generate --model "$MODEL" --device "$1" --prompt "Hello" --max-tokens 1 >/dev/null 2>&1
  t1=$(date +%s.%N)
  python3 -c "print('%.2f' % ($t1 - $t0))"
}

echo "# $(date -u +%F) $(git rev-parse --short HEAD) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# model $MODEL; kvshard dot kernels: $(KVS_THREADS=1 "$KVS" generate --model "$MODEL" --prompt hi --max-tokens 1 --verbose 2>&1 | grep -o "cpu backend: .*" | head -1)"
echo "| threads | engine | load+1 token s | pp128 tok/s | tg64 tok/s | pp vs llama.cpp | tg vs llama.cpp |"
echo "|---|---|---|---|---|---|---|"
for t in 1 2; do
  read -r lpp ltg < <(llama_rates "$t")
  echo "| $t | llama.cpp | | $lpp | $ltg | 1.00 | 1.00 |"
  for dev in cpu cpu-reference; do
    read -r pp tg < <(kvs_rates "$dev" "$t")
    ld=$(load_s "$dev" "$t")
    python3 -c "print('| $t | kvshard $dev | $ld | $pp | $tg | %.2f | %.2f |' % ($pp / $lpp, $tg / $ltg))"
  done
done

# Shared cores: the same kvshard run while another kvshard decodes on the machine.
echo
echo "| with a second CPU-heavy process | pp128 tok/s | tg64 tok/s | vs quiet (tg) |"
echo "|---|---|---|---|"
read -r qpp qtg < <(kvs_rates cpu 2)
KVS_THREADS=2 "$KVS" bench --model "$MODEL" --device cpu --input-len 32 --output-len 2000 --num-prompts 4 >/dev/null 2>&1 &
other=$!
sleep 2
read -r spp stg < <(kvs_rates cpu 2)
kill "$other" 2>/dev/null || true
wait "$other" 2>/dev/null || true
python3 -c "print('| kvshard cpu, 2 threads, beside another kvshard (2 threads) | $spp | $stg | %.2f |' % ($stg / $qtg))"
