#!/usr/bin/env python3
"""Writes tests/goldens/models/tiny-llama31 quantized to FP8 by llm-compressor (vLLM's own
quantization tool, on the CPU: FP8_DYNAMIC and FP8_BLOCK need no calibration data) and saved in
the compressed-tensors format, so the FP8 loader is tested against files nobody here formatted:
  tiny-llama31-fp8-llmc-channel       FP8_DYNAMIC: per-channel weight scales [out, 1] (bf16)
  tiny-llama31-fp8-llmc-block         FP8_BLOCK: a scale per 128 x 128 block (partial blocks at
                                      the edges: the tiny model's dims are 64-160) (bf16)
  tiny-llama31-fp8-llmc-*.json        transformers (float32, eager attention) running tiny-llama31
                                      with every projection replaced by torch's decode of the saved
                                      codes times their scales: logits at every position and
                                      40-token greedy continuations of tiny-llama31.json's prompts
Weight-only, as kvshard's CPU backend runs FP8 weights: transformers' compressed-tensors
integration also quantizes activations to FP8 on the fly (moving these logits by ~0.2), and
cannot run FP8_BLOCK's 128-wide activation groups on the tiny model's 96-wide rows.
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
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_goldens import GREEDY_TOKENS, greedy  # noqa: E402

MODELS = Path("tests/goldens/models")
SCHEMES = {"channel": "FP8_DYNAMIC", "block": "FP8_BLOCK"}
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def dequantized(out, block):
    """Every saved FP8 weight as torch decodes it: codes x scales (float32)."""
    saved = {}
    for f in sorted(out.glob("*.safetensors")):
        saved.update(load_file(f))
    weights = {}
    for name, codes in saved.items():
        if codes.dtype != torch.float8_e4m3fn:
            continue
        full = saved[name + "_scale"].float()
        if block:  # a grid of [ceil(rows / br), ceil(cols / bc)] scales
            full = full.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: codes.shape[0], : codes.shape[1]]
        weights[name] = (codes.float() * full).contiguous()
    assert Q_PROJ in weights, sorted(saved)
    return weights


def logits_golden(name, src, weights, prompts):
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").eval()
    state = model.state_dict()
    with torch.no_grad():
        for k, w in weights.items():
            state[k].copy_(w)
    entries = []
    for ids in prompts:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        tokens, margins = greedy(model, ids, GREEDY_TOKENS)
        entries.append({"prompt_ids": ids, "greedy": tokens, "greedy_margins": margins,
                        "logits": [[round(float(x), 6) for x in row] for row in logits]})
    (MODELS / f"{name}.json").write_text(json.dumps({"model": name, "prompts": entries}, indent=1))


def main():
    src = MODELS / "tiny-llama31"
    prompts = [p["prompt_ids"] for p in json.loads((MODELS / "tiny-llama31.json").read_text())["prompts"]]
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
        decoded = dequantized(out, weights.get("block_structure"))
        decoded[Q_PROJ].numpy().tofile(out / "dequantized.f32")
        (out / "versions.txt").write_text(
            f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
            f"llmcompressor {llmcompressor.__version__}\ncompressed-tensors {compressed_tensors.__version__}\n")
        logits_golden(name, src, decoded, prompts)
        print("wrote", out, weights["strategy"], weights.get("block_structure"))


if __name__ == "__main__":
    main()
