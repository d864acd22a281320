#!/usr/bin/env python3
"""Gemma 3's tokenizer goldens: llama.cpp's tokenizer (llama-tokenize) on the Gemma 3 270M GGUF.

transformers' GGUF converter is not the reference here: it rebuilds Gemma's SentencePiece BPE
without its merge order and splits common words ("The capital of France is" becomes 11 pieces
where SentencePiece and llama.cpp give 5), so llama.cpp — which reads the same vocabulary and
scores — is. SentencePiece itself, given a model built from the GGUF's pieces, scores and types,
agrees with llama.cpp on this corpus except where whitespace runs meet Gemma's user-defined pieces
("\\n\\n", "    ", taken whole by llama.cpp as by the added tokens of Gemma's tokenizer.json) and
where control tokens (<start_of_turn>) are written in the text, which SentencePiece does not parse.

  tokenizer/gemma3_corpus.json  {"text", "ids"} per corpus line, BOS included
Usage: make_gemma3_tokenizer_goldens.py GGUF LLAMA_TOKENIZE   (from the repo root)
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_goldens import CORPUS, GOLDENS  # noqa: E402

EXTRA = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "Combining marks: e\u0301 n\u0303 a\u0308 \u1e9b\u0323 Z\u0351\u0364\u036b\u0313",
    "ZWJ: 👩🏽‍💻 🏳️‍🌈 🧑‍🤝‍🧑 and keycaps 1️⃣ #️⃣",
    "CJK: 漢字かなカナ한글 ｆｕｌｌｗｉｄｔｈ ＡＢＣ 𠀀𠀁 (astral)",
    "runs:  two   three    four\t\ttabs\n\n\nthree newlines     five spaces",
    "Unknown bytes and rare scripts: ᚠᛇᚻ ꦲꦏ 𓀀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    " leading space",
    "trailing space ",
]


def main(gguf, llama_tokenize):
    cases = []
    for text in CORPUS + EXTRA:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", delete=False) as f:
            f.write(text)
        out = subprocess.run([llama_tokenize, "-m", gguf, "-f", f.name, "--ids", "--log-disable"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        cases.append({"text": text, "ids": json.loads(out)})
        Path(f.name).unlink()
    (GOLDENS / "tokenizer" / "gemma3_corpus.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
