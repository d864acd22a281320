#!/usr/bin/env bash
# README command 1: set up, build, fetch SmolLM2, and ask it a question (greedy, chat template).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source "${KVS_BUILD_DIR:-build}/env.sh"
"${KVS_BUILD_DIR:-build}"/launcher/kvshard generate --model .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf --chat \
  --prompt "${1:-What is the capital of France? Answer in one sentence.}" --max-tokens 64
