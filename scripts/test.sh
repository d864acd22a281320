#!/usr/bin/env bash
# README command 2 (and CI): set up, build, fetch SmolLM2 and Gemma 3 270M, run the whole test suite.
# Model tests are required here (KVS_REQUIRE_MODEL=1): a missing model fails rather than skips.
# GPU tests skip with a reason on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_model.sh smollm2 gemma3  # the model tests' two real models
source "${KVS_BUILD_DIR:-build}/env.sh"
export KVS_REQUIRE_MODEL=${KVS_REQUIRE_MODEL:-1}
# The official OpenAI client drives the server's end-to-end test, and matplotlib draws the serving
# benchmark's plot there (both pinned; from PyPI).
python3 -m pip install -q --disable-pip-version-check "openai==3.57.0" "matplotlib==3.9.2" 2>&1 \
  | grep -v "Running pip as the 'root' user" || true
python3 -c "import openai, matplotlib" || { echo "openai / matplotlib could not be installed (needed by serve_e2e_test)" >&2; exit 1; }
ctest --test-dir "${KVS_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" --timeout 1200
