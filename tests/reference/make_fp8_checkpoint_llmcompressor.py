#!/usr/bin/env python3
"""Writes tests/goldens/models/tiny-llama31 quantized to FP8 by llm-compressor (vLLM's own
quantization tool, on the CPU: FP8_DYNAMIC and FP8_BLOCK need no calibration data) and saved in
the compressed-tensors format, so the FP8 loader is tested against files nobody here formatted:
  tiny-llama31-fp8-llmc-channel       FP8_DYNAMIC: per-channel weight scales [out, 1] (bf16)
  tiny-llama31-fp8-llmc-block         FP8_BLOCK: a scale per 128 x 128 block (partial blocks at
                                      the edges: the tiny model's dims are 64-160) (bf16)
  tiny-llama31-fp8-llmc-*.json        transformers' logits on torch's decode of the saved codes
                                      (make_fp8_logits_goldens.py). Weight-only: transformers'
                                      compressed-tensors integration also quantizes activations to
                                      FP8 on the fly (moving the logits by ~0.2), and cannot run
                                      FP8_BLOCK's 128-wide activation groups on 96-wide rows.
Beside each checkpoint, `dequantized.f32` holds layer 0's q_proj as torch decodes it (float32),
which the loader must reproduce bit for bit, and `versions.txt`.
Usage: make_fp8_checkpoint_llmcompressor.py   (from the repo root; torch, transformers,
llmcompressor: `pip install llmcompressor` pulls the rest)
"""
import json
import shutil
import sys
from pathlib import Path

import compressed_tensors
import llmcompressor
import torch
import transformers
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_fp8_logits_goldens import dequantized, logits_golden  # noqa: E402

MODELS = Path("tests/goldens/models")
SCHEMES = {"channel": "FP8_DYNAMIC", "block": "FP8_BLOCK"}
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def main():
    src = MODELS / "tiny-llama31"
    for layout, scheme in SCHEMES.items():
        name = f"tiny-llama31-fp8-llmc-{layout}"
        out = MODELS / name
        shutil.rmtree(out, ignore_errors=True)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
        oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"]))
        model.save_pretrained(out, save_compressed=True)
        (out / "recipe.yaml").unlink(missing_ok=True)
        weights = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"][
            "weights"]
        dequantized(out)[Q_PROJ].numpy().tofile(out / "dequantized.f32")
        (out / "versions.txt").write_text(
            f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
            f"llmcompressor {llmcompressor.__version__}\ncompressed-tensors {compressed_tensors.__version__}\n")
        logits_golden(out)
        print("wrote", out, weights["strategy"], weights.get("block_structure"))


if __name__ == "__main__":
    main()
