#!/usr/bin/env python3
"""A Qwen3 GGUF written by llama.cpp's own converter (convert_hf_to_gguf.py), from tiny-qwen3.

  models/tiny-qwen3.llama-cpp.gguf   tiny-qwen3's weights as llama.cpp stores them (bf16, q/k norm
                                     tensors attn_q_norm / attn_k_norm, its metadata keys), so the
                                     GGUF loader's qwen3 path is tested on a file nobody here
                                     formatted; the test compares its logits with transformers' on
                                     the HF checkpoint (tiny-qwen3.json)

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


def main(llama_cpp):
    work = Path(tempfile.mkdtemp())
    ckpt = work / "tiny-qwen3"
    shutil.copytree(GOLDENS / "models" / "tiny-qwen3", ckpt)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((GOLDENS / "text" / "public_domain.txt").read_text().splitlines(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>").save_pretrained(ckpt)

    sys.path[:0] = [llama_cpp, llama_cpp + "/gguf-py"]
    import conversion.base as base  # llama.cpp's converter package
    for name in dir(base):
        cls = getattr(base, name)
        if isinstance(cls, type) and hasattr(cls, "get_vocab_base_pre"):
            cls.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    out = GOLDENS / "models" / "tiny-qwen3.llama-cpp.gguf"
    sys.argv = [llama_cpp + "/convert_hf_to_gguf.py", str(ckpt), "--outtype", "bf16", "--outfile", str(out)]
    runpy.run_path(sys.argv[0], run_name="__main__")
    shutil.rmtree(work)


if __name__ == "__main__":
    main(sys.argv[1])
