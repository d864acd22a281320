#!/usr/bin/env python3
"""Writes one GGUF file that kvshard and llama.cpp both load: the shape of a kvshard preset
(configs/models/NAME.json, a Llama-family config), random F16 weights, and the tokenizer of another
GGUF file (SmolLM2's by default, so the vocabulary is 49,152 tokens: the preset's vocab_size is
replaced by it). llama-quantize then makes the Q8_0 / Q4_0 / Q4_K_M files from it, so both engines
are timed on the same bytes (scripts/gpu_llamacpp_bench.sh; docs/performance.md).

Weights: uniform with variance 1 / fan-in (embedding: variance 1/3), norms 1, as kvshard's random
presets fill them; Q and K rows permuted as llama.cpp's converter stores them (kvshard undoes it).
The writer is the `gguf` package (llama.cpp's gguf-py): the file's layout is theirs.

Usage:
  make_peer_gguf.py --vocab-only SRC.gguf OUT.gguf    # the tokenizer fields alone (small: carried)
  make_peer_gguf.py --preset llama-3-8b --vocab VOCAB.gguf --out F16.gguf [--seed 1]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

# On the GPU machine, the gguf-py of the llama.cpp source gpu_llamacpp_bench.sh unpacked (the writer
# of the llama.cpp that reads the files); here, the `gguf` package from PyPI.
if Path("/tmp/llama.cpp/gguf-py").is_dir():
    sys.path.insert(0, "/tmp/llama.cpp/gguf-py")
import gguf  # noqa: E402


def tokenizer_fields(path):
    reader = gguf.GGUFReader(path)
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            sub = field.types[1] if len(field.types) > 1 else None
            yield name, field.contents(), field.types[0], sub


def permute_qk(w, heads):
    # llama.cpp's converter interleaves each head's rotary halves (LlamaModel.permute).
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-only", nargs=2, metavar=("SRC", "OUT"))
    ap.add_argument("--preset")
    ap.add_argument("--vocab")
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--config-dir", default=str(Path(__file__).resolve().parent.parent / "configs" / "models"))
    a = ap.parse_args()

    if a.vocab_only:
        w = gguf.GGUFWriter(a.vocab_only[1], "llama")
        for name, val, vtype, sub in tokenizer_fields(a.vocab_only[0]):
            w.add_key_value(name, val, vtype, sub)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return

    c = json.load(open(Path(a.config_dir) / f"{a.preset}.json"))
    if c.get("model_type") not in ("llama", "mistral"):
        sys.exit(f"{a.preset}: model_type {c.get('model_type')} is not a Llama-family config")
    fields = list(tokenizer_fields(a.vocab))
    vocab = next(len(v) for n, v, _, _ in fields if n == "tokenizer.ggml.tokens")
    hidden, ffn, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    hq, hk = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    d = c.get("head_dim") or hidden // hq

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"{a.preset} (random F16 weights, kvshard's peer file)")
    w.add_context_length(c.get("max_position_embeddings", 8192))
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(hq)
    w.add_head_count_kv(hk)
    w.add_key_length(d)
    w.add_value_length(d)
    w.add_rope_dimension_count(d)
    w.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, val, vtype, sub in fields:
        w.add_key_value(name, val, vtype, sub)

    rng = np.random.default_rng(a.seed)

    def mat(rows, cols, half_range=None):
        h = half_range if half_range is not None else np.sqrt(3.0 / cols)
        return rng.uniform(-h, h, size=(rows, cols)).astype(np.float16)

    ones = lambda n: np.ones(n, dtype=np.float32)
    w.add_tensor("token_embd.weight", mat(vocab, hidden, 1.0))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(hidden))
        w.add_tensor(p + "attn_q.weight", permute_qk(mat(hq * d, hidden), hq))
        w.add_tensor(p + "attn_k.weight", permute_qk(mat(hk * d, hidden), hk))
        w.add_tensor(p + "attn_v.weight", mat(hk * d, hidden))
        w.add_tensor(p + "attn_output.weight", mat(hidden, hq * d))
        w.add_tensor(p + "ffn_norm.weight", ones(hidden))
        w.add_tensor(p + "ffn_gate.weight", mat(ffn, hidden))
        w.add_tensor(p + "ffn_up.weight", mat(ffn, hidden))
        w.add_tensor(p + "ffn_down.weight", mat(hidden, ffn))
    w.add_tensor("output_norm.weight", ones(hidden))
    if not c.get("tie_word_embeddings", False):
        w.add_tensor("output.weight", mat(vocab, hidden))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{a.out}: {a.preset} shape, vocabulary {vocab}, {layers} layers, F16")


if __name__ == "__main__":
    main()
