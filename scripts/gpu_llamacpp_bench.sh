#!/usr/bin/env bash
# On one H200 (device tool, carrying .deps, after `bash scripts/pack_llamacpp_source.sh` here):
# kvshard beside llama.cpp (its CUDA build for sm_90, flash attention on) on the same GGUF files and
# the same GPU (issue 21, item 5). Each stage is skipped when its output is already there, so on a
# warm machine (which keeps /tmp between calls) the stages may span several calls:
#  1. kvshard; llama.cpp's llama-bench, llama-batched-bench and llama-quantize (about 5 minutes, or
#     none where .deps carries them built: scripts/pack_llamacpp_cuda.sh);
#  2. the peer files in /tmp/kvs-peer: Llama-3-8B's shape with SmolLM2's 49,152-token vocabulary
#     and random F16 weights (make_peer_gguf.py), then llama-quantize's Q8_0, Q4_0 and Q4_K_M;
#  3. per file, beside the copy ceiling: llama-bench pp512 / tg128, llama-batched-bench at 1, 32
#     and 128 sequences of 512 prompt and 128 generated tokens, and kvshard bench at the same
#     lengths and counts. Each file's lines go to /tmp/kvs-peer/<type>.txt (printed at the end);
#     delete one to measure it again.
# Usage: bash scripts/gpu_llamacpp_bench.sh [TYPES]   (default: F16 Q8_0 Q4_0 Q4_K_M)
source "$(dirname "$0")/gpu_common.sh"
TYPES=${*:-F16 Q8_0 Q4_0 Q4_K_M}
LL=/tmp/llama.cpp
P=/tmp/kvs-peer
gpu_build
# The prebuilt tools in two parts over two calls (docs/gpu-machine.md: the repository, the
# packages and the whole archive exceed one call's 64 MiB): part 00 comes in .deps with the first
# call and waits in /tmp, part 01 in .cache/llamacpp-part2 with the second.
TOOLS=llama.cpp-cuda-sm90.tar.xz
cp .deps/$TOOLS.part00 /tmp/ 2> /dev/null || true
if [ ! -f .deps/$TOOLS ] && [ -f /tmp/$TOOLS.part00 ] && [ -f .cache/llamacpp-part2/$TOOLS.part01 ]; then
  cat /tmp/$TOOLS.part00 .cache/llamacpp-part2/$TOOLS.part01 > /tmp/$TOOLS
fi
[ -f .deps/$TOOLS ] && cp .deps/$TOOLS /tmp/$TOOLS
mkdir -p $P
# The peer file's writer: the `gguf` package, which the GPU machine's Python lacks; its pure-Python
# wheel in .deps (pack_llamacpp_source.sh) is importable from the archive itself.
GGUF_WHEEL=$(ls .deps/gguf-*.whl 2> /dev/null | head -1)
[ -n "$GGUF_WHEEL" ] && export PYTHONPATH=$PWD/$GGUF_WHEEL${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f /tmp/$TOOLS ] && [ ! -f .deps/llama.cpp-src.tar.xz ] && [ -f /tmp/$TOOLS.part00 ]; then
  # First of the two calls: the F16 file now (python and the gguf package only), the rest next call.
  [ -f $P/F16.gguf ] || python3 scripts/make_peer_gguf.py --preset llama-3-8b --vocab .deps/smollm2-vocab.gguf \
    --out $P/F16.gguf.part > "$OUT/make_peer.log" 2>&1 && mv $P/F16.gguf.part $P/F16.gguf || tail -5 "$OUT/make_peer.log"
  echo "part 00 kept in /tmp, $(ls -s --block-size=M $P 2> /dev/null | tr '\n' ' '); now the call carrying .cache/llamacpp-part2"
  exit 0
fi
{ [ -f .deps/llama.cpp-src.tar.xz ] || [ -f /tmp/$TOOLS ]; } && [ -f .deps/smollm2-vocab.gguf ] \
  || { echo "no llama.cpp in .deps or no .deps/smollm2-vocab.gguf: run scripts/pack_llamacpp_source.sh"; exit 1; }
if [ ! -x $LL/build/bin/llama-batched-bench ] && [ -f /tmp/$TOOLS ]; then
  # Built on the CPU machine by scripts/pack_llamacpp_cuda.sh (same configuration as below).
  mkdir -p $LL/build/bin && tar xJf /tmp/$TOOLS -C $LL/build/bin
fi
if [ ! -x $LL/build/bin/llama-batched-bench ]; then
  mkdir -p $LL && tar xJf .deps/llama.cpp-src.tar.xz -C $LL
  cmake -S $LL -B $LL/build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release > "$OUT/llama_cmake.log" 2>&1 \
    || { tail -20 "$OUT/llama_cmake.log"; exit 1; }
  cmake --build $LL/build -j "$(nproc)" --target llama-bench llama-batched-bench llama-quantize \
    > "$OUT/llama_build.log" 2>&1 || { grep -E "error" "$OUT/llama_build.log" | head -20; exit 1; }
fi
echo "llama.cpp built at $(( $(date +%s) - start )) s"
if [ ! -f $P/F16.gguf ]; then
  python3 scripts/make_peer_gguf.py --preset llama-3-8b --vocab .deps/smollm2-vocab.gguf --out $P/F16.gguf.part \
    > "$OUT/make_peer.log" 2>&1 && mv $P/F16.gguf.part $P/F16.gguf || { tail -5 "$OUT/make_peer.log"; exit 1; }
fi
for t in $TYPES; do
  [ "$t" = F16 ] || [ -f $P/$t.gguf ] || $LL/build/bin/llama-quantize $P/F16.gguf $P/$t.gguf $t > "$OUT/quantize_$t.log" 2>&1 \
    || { tail -5 "$OUT/quantize_$t.log"; exit 1; }
done
echo "peer files ready at $(( $(date +%s) - start )) s: $(cd $P && ls -s --block-size=M *.gguf | tr '\n' ' ')"
gpu_copy_ceiling
for t in $TYPES; do
  [ -s $P/$t.txt ] && continue
  F=$P/$t.gguf
  {
    echo "## $t ($(du -h $F | cut -f1))"
    timeout 300 $LL/build/bin/llama-bench -m $F -p 512 -n 128 -fa on -ngl 99 -r 3 -o md 2>&1 | grep -E "^\|"
    timeout 400 $LL/build/bin/llama-batched-bench -m $F -c 90112 -b 2048 -ub 512 -npp 512 -ntg 128 -npl 1,32,128 \
      -fa on -ngl 99 2>&1 | grep -E "^\|"
    for n in 1 32 128; do
      timeout 300 $K bench --device cuda --model $F --input-len 512 --output-len 128 --num-prompts $n --max-seqs $n \
        2>&1 | grep -E "^\| (offline|decode)|rror"
    done
  } > $P/$t.txt.part 2>&1 && mv $P/$t.txt.part $P/$t.txt
  echo "$t measured at $(( $(date +%s) - start )) s"
done
cat $P/*.txt
echo "total $(( $(date +%s) - start )) s"
