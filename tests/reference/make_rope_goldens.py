"""Rotary embeddings far beyond 128K positions, as HF transformers computes them (float32), for
tests/kernels/rope_long_context_test.cc. Llama-3.1-8B's rope (theta 500000, llama3 scaling, factor
8) on two heads of fixed bf16-exact values, at positions from 0 to 262143.

Usage (needs torch and transformers; run from the repo root):
  python3 tests/reference/make_rope_goldens.py tests/goldens/rope/llama31_long_positions.json
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

POSITIONS = [0, 1, 4095, 8192, 65536, 131071, 131072, 150001, 200003, 262143]


def main(out):
    preset = json.loads(Path("configs/models/llama-3.1-8b.json").read_text())
    config = LlamaConfig(**{k: v for k, v in preset.items() if k != "model_type"})
    head_dim = config.hidden_size // config.num_attention_heads
    rope = LlamaRotaryEmbedding(config=config)
    g = torch.Generator().manual_seed(7)
    heads = 2
    x = torch.randn(1, heads, 1, head_dim, generator=g).to(torch.bfloat16).float()  # bf16-exact inputs
    x = x.expand(1, heads, len(POSITIONS), head_dim).contiguous()
    position_ids = torch.tensor([POSITIONS])
    cos, sin = rope(x, position_ids)
    q, _ = apply_rotary_pos_emb(x, x, cos, sin)
    golden = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}, float32",
        "preset": "llama-3.1-8b",
        "head_dim": head_dim,
        "heads": heads,
        "positions": POSITIONS,
        "x": x[0, :, 0, :].reshape(-1).tolist(),  # [heads * head_dim], the same at every position
        "rotated": q[0].permute(1, 0, 2).reshape(len(POSITIONS), -1).tolist(),  # [positions][heads * head_dim]
        "inv_freq": rope.inv_freq.tolist(),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(golden))
    print(f"wrote {out}: {len(POSITIONS)} positions up to {max(POSITIONS)}")


if __name__ == "__main__":
    main(sys.argv[1])
