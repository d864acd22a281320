#!/usr/bin/env bash
# On one GPU (device tool; transformers quantizes FP8 only on a GPU): tiny-llama31 quantized by
# transformers' FineGrainedFP8Config into $OUT/tiny-llama31-fp8-transformers (issue 21 item 3: the
# loader against a file transformers wrote). Bring it back into tests/goldens/models/ and
# fp8_checkpoint_test reads it.
# Usage: bash scripts/gpu_fp8_transformers.sh
source "$(dirname "$0")/gpu_common.sh"
python3 tests/reference/make_fp8_checkpoint_transformers.py tests/goldens/models/tiny-llama31 \
  "$OUT/tiny-llama31-fp8-transformers" 2>&1 | tail -5
ls -la "$OUT/tiny-llama31-fp8-transformers"
python3 -c "import json; print(json.load(open('$OUT/tiny-llama31-fp8-transformers/config.json'))['quantization_config'])"
