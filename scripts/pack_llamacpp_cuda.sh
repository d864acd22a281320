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
src=.deps/llama.cpp-src.tar.xz
[ -f $src ] || src=.cache/llama.cpp-src.tar.xz
[ -f $src ] || { echo "no .deps/llama.cpp-src.tar.xz: run scripts/pack_llamacpp_source.sh"; exit 1; }
export PATH=/usr/local/cuda/bin:$PATH
work=${LLAMACPP_BUILD_DIR:-/tmp/llamacpp-cuda}
mkdir -p "$work" && tar xJf $src -C "$work"
# This machine has no GPU driver: libcuda.so.1's symbols are left for the GPU machine's to resolve.
cmake -S "$work" -B "$work/build" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DCMAKE_INSTALL_RPATH='$ORIGIN' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--allow-shlib-undefined" > "$work/cmake.log"
cmake --build "$work/build" -j "$(nproc)" --target llama-bench llama-batched-bench llama-quantize > "$work/build.log"
strip --strip-unneeded "$work"/build/bin/*.so.*
( cd "$work/build/bin" && tar cJf - llama-bench llama-batched-bench llama-quantize ./*.so* ) > .deps/llama.cpp-cuda-sm90.tar.xz
# The device tool carries at most 64 MiB: the built tools (~42 MB) take the source's place there.
mkdir -p .cache && [ ! -f .deps/llama.cpp-src.tar.xz ] || mv .deps/llama.cpp-src.tar.xz .cache/
# Still too much beside the repository and the packages (80 MiB): two parts for two calls
# (docs/gpu-machine.md), the first in .deps, the second in .cache/llamacpp-part2.
mkdir -p .cache/llamacpp-part2
split -n 2 -d -a 2 .deps/llama.cpp-cuda-sm90.tar.xz .deps/llama.cpp-cuda-sm90.tar.xz.part
mv .deps/llama.cpp-cuda-sm90.tar.xz.part01 .cache/llamacpp-part2/
mv .deps/llama.cpp-cuda-sm90.tar.xz .cache/
ls -la .deps/*.part00 .cache/llamacpp-part2/ && du -sh .deps
