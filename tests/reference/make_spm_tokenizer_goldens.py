"""SentencePiece-style BPE goldens from the Hugging Face `tokenizers` library (0.23.3).

Writes tests/goldens/tokenizer/spm_*.json: two tokenizer.json files in the two layouts Llama 2 /
Mistral checkpoints ship (byte-fallback BPE over "▁"-joined text; `legacy`: a Prepend("▁") +
Replace(" ", "▁") normalizer and a Replace/ByteFallback/Fuse/Strip decoder; `metaspace`: a
Metaspace pre-tokenizer with prepend_scheme "first" and a Metaspace decoder), each with the ids
and decoded strings `tokenizers` gives for a Unicode-heavy corpus. The vocabulary is trained here
on the corpus (the model's layout is Llama 2's: <unk> <s> </s>, then the 256 byte tokens, then
the merges' pieces), so the characters it never saw take the byte fallback.

Usage: python3 tests/reference/make_spm_tokenizer_goldens.py   (from the repo root; needs tokenizers)
"""
import json
import pathlib

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TRAIN = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "What is the capital of France? The capital of France is Paris.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Once upon a time there was a little girl who lived in a village near the forest.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2026-12-04",
    "Über naïve café résumé — façade, coöperate; Ελληνικά; русский язык.",
    "日本語のテキストと中文文本。",
]
CORPUS = [
    "Hello world",
    " leading space",
    "two  spaces   and\ttab\nnewline",
    "What is the capital of France? Answer in one sentence.",
    "Über naïve café résumé",
    "日本語のテキスト、未知の漢字：鬱",
    "emoji 👍🏽 and 👨‍👩‍👧‍👦 family",
    "combining e\u0301 and a\u0308",
    "<s>inline special</s> tokens",
    "text<s>between</s>",
    "",
    " ",
    "   ",
    "\u2581already metaspace",
    "x" * 300,
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x * 2\n",
    "Ω≈ç√∫˜µ≤≥÷ and ¡™£¢∞§¶•ªº",
    "zero\u200bwidth and \u00a0nbsp",
    "\U0001F600\U0001F601 grinning",
]


def trained_pieces():
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    t.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=250, special_tokens=["<unk>", "<s>", "</s>"],
                                                     show_progress=False))
    model = json.loads(t.to_str())["model"]
    return model["vocab"], model["merges"]


def build(style):
    trained_vocab, merges = trained_pieces()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(trained_vocab.items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    t = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    if style == "legacy":
        t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
    else:
        t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        t.decoder = decoders.Sequence([decoders.ByteFallback(),
                                       decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return t


def main():
    out = pathlib.Path("tests/goldens/tokenizer")
    for style in ("legacy", "metaspace"):
        t = build(style)
        (out / f"spm_{style}_tokenizer.json").write_text(t.to_str())
        cases = []
        for text in CORPUS:
            for special in (True, False):
                ids = t.encode(text, add_special_tokens=special).ids
                cases.append({"text": text, "add_special_tokens": special, "ids": ids,
                              "decoded": t.decode(ids, skip_special_tokens=False),
                              "decoded_skip": t.decode(ids, skip_special_tokens=True)})
        (out / f"spm_{style}_corpus.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False))
        print(style, len(t.get_vocab()), "tokens,", len(cases), "cases")


if __name__ == "__main__":
    main()
