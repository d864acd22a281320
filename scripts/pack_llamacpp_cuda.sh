#!/usr/bin/env bash
# Builds llama.cpp's CUDA tools for sm_90 here (nvcc is on this machine; about an hour on 2 cores)
# and packs them, with their shared libraries, as .deps/llama.cpp-cuda-sm90.tar.xz, so that
# scripts/gpu_llamacpp_bench.sh spends no device time building them (about 5 minutes of a 10-minute
# call). The same configuration that script would build: CUDA on, sm_90, no curl, tools only; the
# libraries next to the binaries (RPATH $ORIGIN). Needs .deps/llama.cpp-src.tar.xz
# (scripts/pack_llamacpp_source.sh). A benchmark peer, never a dependency of kvshard.
# Usage: bash scripts/pack_llamacpp_cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .deps/llama.cpp-src.tar.xz ] || { echo "no .deps/llama.cpp-src.tar.xz: run scripts/pack_llamacpp_source.sh"; exit 1; }
export PATH=/usr/local/cuda/bin:$PATH
work=${LLAMACPP_BUILD_DIR:-/tmp/llamacpp-cuda}
mkdir -p "$work" && tar xJf .deps/llama.cpp-src.tar.xz -C "$work"
cmake -S "$work" -B "$work/build" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON > "$work/cmake.log"
cmake --build "$work/build" -j "$(nproc)" --target llama-bench llama-batched-bench llama-quantize > "$work/build.log"
( cd "$work/build/bin" && tar cJf - llama-bench llama-batched-bench llama-quantize ./*.so* ) > .deps/llama.cpp-cuda-sm90.tar.xz
ls -la .deps/llama.cpp-cuda-sm90.tar.xz
