#!/usr/bin/env python3
"""Checkpoints and goldens for sliding windows outside Gemma 3, from code nobody here wrote.

  models/tiny-mistral-swa  Mistral with sliding_window 6 in every layer, GQA 4q/2kv, bf16: HF
                           masks each query to its last 6 keys (kvshard once refused contexts
                           past the window instead)
  models/tiny-qwen2-swa    Qwen2 with use_sliding_window, a window of 5 and max_window_layers 1:
                           layer 0 global, layers 1-2 windowed, float32
  models/tiny-*-swa.json   HF transformers (float32, eager attention): logits at every position and
                           40-token greedy continuations for prompts of 1 to 61 tokens
Usage: make_window_goldens.py   (torch, transformers 4.57; from the repo root)
"""
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from make_goldens import GOLDENS, model_golden  # noqa: E402
from make_random_checkpoints import VOCAB, init_weights  # noqa: E402


def main():
    out = GOLDENS / "models"
    mistral = MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                            sliding_window=6, rope_theta=10000.0, tie_word_embeddings=False,
                            bos_token_id=1, eos_token_id=2)
    m = MistralForCausalLM(mistral)
    init_weights(m, 21)
    m.to(torch.bfloat16).save_pretrained(out / "tiny-mistral-swa", safe_serialization=True)

    qwen = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                       use_sliding_window=True, sliding_window=5, max_window_layers=1,
                       bos_token_id=1, eos_token_id=2)
    assert qwen.layer_types == ["full_attention", "sliding_attention", "sliding_attention"], qwen.layer_types
    m = Qwen2ForCausalLM(qwen)
    init_weights(m, 22)
    m.save_pretrained(out / "tiny-qwen2-swa", safe_serialization=True)

    g = torch.Generator().manual_seed(23)
    for name in ["tiny-mistral-swa", "tiny-qwen2-swa"]:
        model = AutoModelForCausalLM.from_pretrained(out / name, dtype=torch.float32, attn_implementation="eager").eval()
        prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (1, 9, 23, 61)]
        model_golden(name, model, prompts, all_positions=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
