"""A GGUF SentencePiece vocabulary (tokenizer.ggml.model = "llama": tokens, scores, token types, no
merges) and the ids transformers' GGUF converter (GGUFLlamaConverter, transformers 4.57.3) gives
for the SentencePiece corpus of make_spm_tokenizer_goldens.py.

The vocabulary is spm_legacy_tokenizer.json's, written by the `gguf` package (0.19.0) with each
merged piece scored by minus its merge rank (as SentencePiece BPE models score their pieces).
Writes tests/goldens/tokenizer/spm_llama.gguf and spm_gguf_corpus.json.

Usage (repo root; needs gguf, transformers, tokenizers): python3 tests/reference/make_spm_gguf_goldens.py
"""
import json
from pathlib import Path

import gguf
from gguf import GGUFReader
from transformers.integrations.ggml import GGUFLlamaConverter
from transformers.modeling_gguf_pytorch_utils import read_field

DIR = Path("tests/goldens/tokenizer")


def write_gguf(path):
    t = json.loads((DIR / "spm_legacy_tokenizer.json").read_text())
    vocab, merges = t["model"]["vocab"], t["model"]["merges"]
    rank = {}
    for i, m in enumerate(merges):
        a, b = m if isinstance(m, list) else m.split(" ")
        rank.setdefault(a + b, i)
    tokens, scores, types = [], [], []
    for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        tokens.append(tok)
        if tok == "<unk>":
            types.append(2)
        elif tok in ("<s>", "</s>"):
            types.append(3)
        elif tok.startswith("<0x") and len(tok) == 6:
            types.append(6)
        else:
            types.append(1)
        scores.append(-float(rank[tok]) if tok in rank else 0.0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    path = DIR / "spm_llama.gguf"
    write_gguf(path)
    r = GGUFReader(str(path))
    fields = {}
    for k in ("model", "tokens", "scores", "token_type", "bos_token_id", "eos_token_id", "unknown_token_id",
              "add_bos_token", "add_space_prefix"):
        v = read_field(r, "tokenizer.ggml." + k)
        fields[k] = v if k in ("tokens", "scores", "token_type") else v[0]
    tok = GGUFLlamaConverter(fields).converted()
    corpus = json.loads((DIR / "spm_legacy_corpus.json").read_text())
    cases = []
    for text in dict.fromkeys(e["text"] for e in corpus):
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
    (DIR / "spm_gguf_corpus.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False))
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
