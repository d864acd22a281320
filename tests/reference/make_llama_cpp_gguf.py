#!/usr/bin/env python3
"""Qwen3 and Gemma 3 GGUFs written by llama.cpp's own converter (convert_hf_to_gguf.py).

  models/tiny-qwen3.llama-cpp.gguf   tiny-qwen3's weights as llama.cpp stores them (bf16, q/k norm
                                     tensors attn_q_norm / attn_k_norm, its metadata keys), so the
                                     GGUF loader's qwen3 path is tested on a file nobody here
                                     formatted; the test compares its logits with transformers' on
                                     the HF checkpoint (tiny-qwen3.json)
  models/tiny-gemma3.llama-cpp.gguf  a tiny Gemma 3 as llama.cpp stores it (norms as 1 + w, the
  models/tiny-gemma3.llama-cpp.json  window but no pattern key: llama.cpp's default of 6), with
                                     transformers' logits on the HF checkpoint it came from

tiny-qwen3 has no tokenizer and the converter needs one: a 500-piece byte-level BPE is trained by
the `tokenizers` library into a copy of the checkpoint, and the converter is told its pre-tokenizer
is Qwen2's (its table of known tokenizers is keyed by hashes of real ones).
Usage: make_llama_cpp_gguf.py LLAMA_CPP_DIR   (llama.cpp source, e.g. the llama-cpp-python sdist's
vendor/llama.cpp; torch, transformers, tokenizers; from the repo root)
"""
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

GOLDENS = Path("tests/goldens")


def toy_tokenizer(ckpt, vocab_size):
    """A byte-level BPE of `vocab_size` pieces (specials included) trained on the public-domain text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((GOLDENS / "text" / "public_domain.txt").read_text().splitlines(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>").save_pretrained(ckpt)


def convert(llama_cpp, ckpt, out):
    """llama.cpp's convert_hf_to_gguf.py on `ckpt`, told the toy tokenizer's pre-tokenizer is Qwen2's."""
    if llama_cpp not in sys.path:
        sys.path[:0] = [llama_cpp, llama_cpp + "/gguf-py"]
    import conversion.base as base  # llama.cpp's converter package
    for name in dir(base):
        cls = getattr(base, name)
        if isinstance(cls, type) and hasattr(cls, "get_vocab_base_pre"):
            cls.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    sys.argv = [llama_cpp + "/convert_hf_to_gguf.py", str(ckpt), "--outtype", "bf16", "--outfile", str(out)]
    runpy.run_path(sys.argv[0], run_name="__main__")


def gemma3_checkpoint(ckpt):
    """A tiny Gemma 3 within what llama.cpp's GGUF keeps: query_pre_attn_scalar = head_dim and the
    default pattern (every 6th layer global: 7 layers, layer 5 global), a window of 5 tokens; bf16
    weights; transformers' float32 logits on it (eager attention) as goldens."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig
    from make_goldens import model_golden
    from make_random_checkpoints import VOCAB, init_weights
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=7,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32,
                           max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1000000.0,
                           rope_local_base_freq=10000.0, sliding_window=5, sliding_window_pattern=6,
                           hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0)
    m = Gemma3ForCausalLM(cfg)
    init_weights(m, 6)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    m.to(torch.bfloat16).save_pretrained(ckpt, safe_serialization=True)
    m = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(13)
    model_golden("tiny-gemma3.llama-cpp", m, [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (9, 31)],
                 all_positions=True)


def main(llama_cpp):
    sys.path.insert(0, str(Path(__file__).parent))
    work = Path(tempfile.mkdtemp())
    ckpt = work / "tiny-qwen3"
    shutil.copytree(GOLDENS / "models" / "tiny-qwen3", ckpt)
    toy_tokenizer(ckpt, 500)
    convert(llama_cpp, ckpt, GOLDENS / "models" / "tiny-qwen3.llama-cpp.gguf")
    # Gemma's converter drops embedding rows past the tokenizer's pieces: 512 of them, all kept.
    ckpt = work / "tiny-gemma3"
    gemma3_checkpoint(ckpt)
    toy_tokenizer(ckpt, 512)
    convert(llama_cpp, ckpt, GOLDENS / "models" / "tiny-gemma3.llama-cpp.gguf")
    shutil.rmtree(work)


if __name__ == "__main__":
    main(sys.argv[1])
