#!/usr/bin/env python3
"""Writes FP8 (E4M3) versions of tests/goldens/models/tiny-llama31 in the layouts vLLM loads, with
the `safetensors` and `ml_dtypes` packages (so the FP8 codes, their rounding and the file are made
by libraries nobody here wrote):
  tiny-llama31-fp8-channel  compressed-tensors, per-channel scales [out, 1] (float32)
  tiny-llama31-fp8-tensor   compressed-tensors, one per-tensor scale [1] (float32)
  tiny-llama31-fp8-block    transformers' fine-grained "fp8", a scale per 32x32 block
                            (`weight_scale_inv`, bfloat16: the dequantization multiplies by it)
Every *_proj weight is quantized as scale = max|w| / 448 over its group, code = w / scale rounded
to E4M3 by ml_dtypes; everything else is copied. Beside each checkpoint, `dequantized.f32` holds
layer 0's q_proj as ml_dtypes decodes it times its scale (float32): what the loader must produce.
Usage: make_fp8_checkpoints.py MODELS_DIR   (safetensors, numpy, ml_dtypes; versions printed)
"""
import json
import shutil
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import safetensors
from safetensors.numpy import load_file, save_file

E4M3 = ml_dtypes.float8_e4m3fn
BLOCK = 32


def quantize(w, layout):
    w = w.astype(np.float32)
    if layout == "tensor":
        scale = np.array([np.abs(w).max() / 448.0], dtype=np.float32)
        codes = (w / scale[0]).astype(E4M3)
        deq = codes.astype(np.float32) * scale[0]
        return codes, scale, deq
    if layout == "channel":
        scale = (np.abs(w).max(axis=1, keepdims=True) / 448.0).astype(np.float32)
        codes = (w / scale).astype(E4M3)
        return codes, scale, codes.astype(np.float32) * scale
    rows, cols = w.shape
    br, bc = -(-rows // BLOCK), -(-cols // BLOCK)
    scale = np.zeros((br, bc), dtype=np.float32)
    for i in range(br):
        for j in range(bc):
            scale[i, j] = np.abs(w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]).max() / 448.0
    scale = scale.astype(ml_dtypes.bfloat16).astype(np.float32)  # stored as bf16
    full = np.repeat(np.repeat(scale, BLOCK, axis=0), BLOCK, axis=1)[:rows, :cols]
    codes = (w / full).astype(E4M3)
    return codes, scale.astype(ml_dtypes.bfloat16), codes.astype(np.float32) * full


def main(models):
    src = models / "tiny-llama31"
    tensors = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    for layout in ("channel", "tensor", "block"):
        out = models / f"tiny-llama31-fp8-{layout}"
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, t in tensors.items():
            if not name.endswith("_proj.weight"):
                written[name] = t
                continue
            codes, scale, deq = quantize(t, layout)
            written[name] = codes
            written[name + ("_scale_inv" if layout == "block" else "_scale")] = scale
            if name == "model.layers.0.self_attn.q_proj.weight":
                deq.astype(np.float32).tofile(out / "dequantized.f32")
        save_file(written, out / "model.safetensors")
        cfg = dict(config)
        if layout == "block":
            cfg["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic",
                                          "weight_block_size": [BLOCK, BLOCK]}
        else:
            cfg["quantization_config"] = {
                "quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
                "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                              "weights": {"type": "float", "num_bits": 8, "strategy": layout,
                                                          "symmetric": True, "dynamic": False}}}}
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        shutil.copy(src / "generation_config.json", out / "generation_config.json")
        print(f"wrote {out}")
    print(f"numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}, safetensors {safetensors.__version__}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
