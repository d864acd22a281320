#!/usr/bin/env bash
# On one GPU (device tool; transformers quantizes FP8 only on a GPU): tiny-llama31 quantized by
# transformers' FineGrainedFP8Config, packed as $OUT/tiny-llama31-fp8-transformers.tar (issue 21
# item 3: the loader against a file transformers wrote; one archive, as the device tool returns 8
# files). Unpack it into tests/goldens/models/ and run make_fp8_logits_goldens.py on it here.
# Usage: bash scripts/gpu_fp8_transformers.sh
source "$(dirname "$0")/gpu_common.sh"
python3 tests/reference/make_fp8_checkpoint_transformers.py tests/goldens/models/tiny-llama31 \
  /tmp/tiny-llama31-fp8-transformers 2>&1 | tail -5
tar cf "$OUT/tiny-llama31-fp8-transformers.tar" -C /tmp tiny-llama31-fp8-transformers
python3 -c "import json; print(json.load(open('/tmp/tiny-llama31-fp8-transformers/config.json'))['quantization_config'])"
