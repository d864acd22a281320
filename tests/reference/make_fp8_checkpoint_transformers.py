#!/usr/bin/env python3
"""Writes tests/goldens/models/tiny-llama31 quantized by transformers itself (FineGrainedFP8Config,
32 x 32 blocks: the tiny model's dims are multiples of 32, not of the default 128), so the FP8
loader is tested against a file nobody here formatted. transformers quantizes FP8 on a GPU only
(compute capability 8.9+), so this runs on the GPU machine (scripts/gpu_fp8_transformers.sh).
Beside the checkpoint: `dequantized.f32`, layer 0's q_proj as torch decodes the saved E4M3 codes
times their block's `weight_scale_inv` (float32), which the loader must reproduce, and
`versions.txt`. Its logits golden is made on any machine afterwards: make_fp8_logits_goldens.py.
Usage: make_fp8_checkpoint_transformers.py SRC_DIR OUT_DIR
"""
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, FineGrainedFP8Config

sys.path.insert(0, str(Path(__file__).parent))
from make_fp8_logits_goldens import dequantized  # noqa: E402

BLOCK = 32


def main(src, out):
    model = AutoModelForCausalLM.from_pretrained(
        src, quantization_config=FineGrainedFP8Config(weight_block_size=[BLOCK, BLOCK]), dtype=torch.bfloat16,
        device_map="cuda")
    model.save_pretrained(out)
    name = "model.layers.0.self_attn.q_proj.weight"
    dequantized(Path(out))[name].numpy().astype("float32").tofile(Path(out) / "dequantized.f32")
    (Path(out) / "versions.txt").write_text(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")
    saved = load_file(next(Path(out).glob("*.safetensors")))
    print("wrote", out, "tensors:", {k: (str(v.dtype), tuple(v.shape)) for k, v in list(saved.items())[:6]})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
