#!/usr/bin/env python3
"""Writes the small random-weight Hugging Face checkpoints the tests use.

Each is a real HF checkpoint (config.json + safetensors) saved by transformers itself, so the
loader is tested against files nobody here formatted. They cover what the loader must handle:
  tiny-llama31  llama, GQA 4q/2kv, explicit head_dim != hidden/heads, Llama-3.1 rope scaling
                (original context 32, so scaling is active at short positions), untied, bf16
  tiny-qwen2    qwen2 (q/k/v bias), MQA 4q/1kv, tied embeddings, fp32, sharded with an index
  tiny-mistral  mistral, full multi-head attention, fp16
Usage: make_random_checkpoints.py OUT_DIR   (needs torch + transformers)
"""
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

VOCAB = 512


def init_weights(model, seed):
    # Wider than HF's default init so logits are well separated and greedy choices are stable.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def main(out):
    out = Path(out)
    llama = LlamaConfig(vocab_size=VOCAB, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                        bos_token_id=1, eos_token_id=2)
    m = LlamaForCausalLM(llama)
    init_weights(m, 1)
    m.to(torch.bfloat16).save_pretrained(out / "tiny-llama31", safe_serialization=True)

    qwen = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=1024,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                       bos_token_id=1, eos_token_id=2)
    m = Qwen2ForCausalLM(qwen)
    init_weights(m, 2)
    m.save_pretrained(out / "tiny-qwen2", safe_serialization=True, max_shard_size="100KB")

    mistral = MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                            sliding_window=None, rope_theta=10000.0, tie_word_embeddings=False,
                            bos_token_id=1, eos_token_id=2)
    m = MistralForCausalLM(mistral)
    init_weights(m, 3)
    m.to(torch.float16).save_pretrained(out / "tiny-mistral", safe_serialization=True)


if __name__ == "__main__":
    main(sys.argv[1])
