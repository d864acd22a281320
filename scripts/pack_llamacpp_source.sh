#!/usr/bin/env bash
# Packs what scripts/gpu_llamacpp_bench.sh carries to the GPU machine (which cannot download):
#   .deps/llama.cpp-src.tar.xz  llama.cpp's source from the PyPI sdist of llama-cpp-python (the
#                               version cpu_bench.sh builds), without models, docs and tests;
#   .deps/smollm2-vocab.gguf    SmolLM2's tokenizer fields alone (the peer files' vocabulary);
#   .deps/gguf-*.whl            the `gguf` package (pure Python), which writes the peer file there.
# llama.cpp is a benchmark peer, never a dependency: nothing in kvshard's build reads these.
# Usage: bash scripts/pack_llamacpp_source.sh   (needs network for the sdist, and .cache/models)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
mkdir -p .deps
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar xzf "$work"/llama_cpp_python-$VERSION.tar.gz -C "$work"
src=$(ls -d "$work"/*/vendor/llama.cpp)
tar cJf .deps/llama.cpp-src.tar.xz -C "$src" --exclude=./models --exclude=./docs --exclude=./media \
  --exclude=./tests --exclude=./examples --exclude=./build --exclude=./.git --exclude='./tools/server/public*' .
python3 -m pip install -q --disable-pip-version-check numpy gguf 2>&1 | grep -v "Running pip as the 'root' user" || true
python3 -m pip download -q --no-deps gguf -d .deps
python3 scripts/make_peer_gguf.py --vocab-only .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf .deps/smollm2-vocab.gguf
ls -la .deps/llama.cpp-src.tar.xz .deps/smollm2-vocab.gguf
