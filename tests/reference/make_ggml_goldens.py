"""Goldens for the GGML block decoders: random blocks of every K-quant and IQ4 type, decoded by the
`gguf` package (llama.cpp's gguf-py, PyPI), written as <TYPE>.blocks (the raw blocks) and
<TYPE>.f32 (little-endian float32 weights). tests/kernels/common/ggml_decode_test.cc requires
kvshard's decoder to equal them bit for bit.

Scale fields hold random finite fp16 (or, for Q8_K, float32) values, the rest random bytes, so
every code, sub-block scale and sign combination appears.

usage: python3 tests/reference/make_ggml_goldens.py tests/goldens/ggml   (gguf==0.19.0)
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

# Byte offsets of each block's fp16 scales (d, and dmin where the type has one).
HALF_FIELDS = {
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
    T.IQ4_NL: (0,),
    T.IQ4_XS: (0,),
}
BLOCKS = 24


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261202)
    for qtype, fields in HALF_FIELDS.items():
        _, block_bytes = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for at in fields:
            raw[:, at:at + 2] = (rng.normal(0, 0.02, size=(BLOCKS, 1))).astype(np.float16).view(np.uint8)
        weights = dequantize(raw, qtype).astype(np.float32)
        assert np.all(np.isfinite(weights)), qtype.name
        raw.tofile(os.path.join(out_dir, f"{qtype.name}.blocks"))
        weights.astype("<f4").tofile(os.path.join(out_dir, f"{qtype.name}.f32"))
        print(f"{qtype.name}: {BLOCKS} blocks of {block_bytes} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/goldens/ggml")
