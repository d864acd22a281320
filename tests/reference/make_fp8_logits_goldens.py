#!/usr/bin/env python3
"""Logits goldens for FP8 versions of tests/goldens/models/tiny-llama31 written by other tools
(llm-compressor, transformers' FineGrainedFP8: make_fp8_checkpoint_llmcompressor.py,
make_fp8_checkpoint_transformers.py). For each checkpoint DIR, DIR.json holds what transformers
(float32, eager attention) gives on tiny-llama31 with every projection replaced by torch's decode
of DIR's saved E4M3 codes times their scales (`_scale`, or transformers' `_scale_inv`, per tensor,
row or block as the config says): logits at every position and 40-token greedy continuations of
tiny-llama31.json's prompts, in that file's format (reference_model_test reads them).
Weight-only, as kvshard's CPU backend runs FP8 weights: the tools' own runtimes also quantize
activations to FP8 on the fly, and transformers runs FineGrainedFP8 on a GPU only.
Usage: make_fp8_logits_goldens.py DIR [DIR...]   (from the repo root; torch, transformers, safetensors)
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_goldens import GREEDY_TOKENS, greedy  # noqa: E402

MODELS = Path("tests/goldens/models")


def block_of(config):
    """The scale blocks [rows, cols] the config names, or None (per tensor / per row)."""
    q = config["quantization_config"]
    if q.get("weight_block_size"):
        return q["weight_block_size"]
    for group in q.get("config_groups", {}).values():
        if (group.get("weights") or {}).get("block_structure"):
            return group["weights"]["block_structure"]
    return None


def dequantized(out):
    """Every saved FP8 weight of checkpoint `out` as torch decodes it: codes x scales (float32)."""
    block = block_of(json.loads((out / "config.json").read_text()))
    saved = {}
    for f in sorted(out.glob("*.safetensors")):
        saved.update(load_file(f))
    weights = {}
    for name, codes in saved.items():
        if codes.dtype != torch.float8_e4m3fn:
            continue
        scale = saved.get(name + "_scale", saved.get(name + "_scale_inv"))
        full = scale.float()
        if full.numel() == 1 or (full.numel() == codes.shape[0] and (full.dim() == 1 or full.shape[-1] == 1)):
            full = full.reshape(-1, 1)  # per tensor or per row
        elif block:  # a grid of [ceil(rows / br), ceil(cols / bc)] scales
            full = full.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[: codes.shape[0], : codes.shape[1]]
        else:
            raise ValueError(f"{name}: scale of shape {tuple(scale.shape)} and no block size in the config")
        weights[name] = (codes.float() * full).contiguous()
    return weights


def logits_golden(out):
    weights = dequantized(out)
    prompts = [p["prompt_ids"] for p in json.loads((MODELS / "tiny-llama31.json").read_text())["prompts"]]
    model = AutoModelForCausalLM.from_pretrained(MODELS / "tiny-llama31", dtype=torch.float32,
                                                 attn_implementation="eager").eval()
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
    name = out.name
    (out.parent / f"{name}.json").write_text(json.dumps({"model": name, "prompts": entries}, indent=1))
    print("wrote", out.parent / f"{name}.json", "from", len(weights), "FP8 tensors")


if __name__ == "__main__":
    for d in sys.argv[1:]:
        logits_golden(Path(d))
