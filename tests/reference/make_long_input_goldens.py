"""Goldens for long and hostile tokenizer inputs, from the Hugging Face `tokenizers` library.

usage: python3 tests/reference/make_long_input_goldens.py   (needs tokenizers; run from the repo root)
Writes tests/goldens/tokenizer/smollm2_long_inputs.json: ids of long single-piece words, long
whitespace runs, CJK and emoji runs, and texts dense with special tokens, under the committed
SmolLM2 tokenizer.json. The merge loop and the special-token scan must give HF's ids on these
exactly, and in time linear in the length (tests/runtime/model/tokenizer_test.cc).
"""
import json
import random
from pathlib import Path

from tokenizers import Tokenizer

TDIR = Path("tests/goldens/tokenizer")


def texts():
    rng = random.Random(19)
    letters = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6000))
    return [
        "a" * 5000,
        "ab" * 2500,
        letters,
        " " * 3000 + "x",
        "\n" * 2000 + "y",
        " \t" * 1000 + "z",
        "中文测试你好世界" * 400,
        "👨‍👩‍👧‍👦" * 300,
        "1234567890" * 300,
        "<|im_start|>user\nhi<|im_end|>\n" * 400,
        "<|im_start|><|im_end|><|endoftext|>" * 300 + "tail",
        "aaaa<|im_end|>" * 500,
    ]


def main():
    tok = Tokenizer.from_file(str(TDIR / "smollm2_tokenizer.json"))
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=True).ids} for t in texts()]
    (TDIR / "smollm2_long_inputs.json").write_text(json.dumps(cases, ensure_ascii=False))


if __name__ == "__main__":
    main()
