#!/usr/bin/env python3
"""Produces the reference goldens in tests/goldens from code nobody here wrote.

  models/*.json     HF transformers (float32): logits for fixed prompts and 40-token greedy
                    continuations, for SmolLM2 (GGUF, dequantized by transformers) and the
                    random checkpoints of make_random_checkpoints.py
  tokenizer/        the `tokenizers` library: ids for a corpus under SmolLM2's vocabulary with
                    three pre-tokenizer set-ups (as converted by transformers from the GGUF;
                    SmolLM2's own Digits+ByteLevel; Llama 3's Split regex + ignore_merges)
  chat_templates.json  transformers' apply_chat_template (Jinja) on SmolLM2's and Llama 3's templates

Usage: make_goldens.py GGUF_PATH   (needs torch, transformers, gguf, tokenizers; run from the repo root)
Greedy continuations are computed by an explicit argmax loop (no EOS stop), as kvshard runs them
with --ignore-eos.
"""
import json
import struct
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

GOLDENS = Path("tests/goldens")
GREEDY_TOKENS = 40

CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing spaces   ",
    "multiple     spaces\tand\ttabs\n\nand newlines\r\n",
    "Numbers: 1 12 123 1234 12345 3.14159 -42 1e10 0x1F",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "Unicode: café naïve résumé Ångström Straße",
    "中文测试：你好，世界！日本語のテキスト。한국어 텍스트",
    "Русский текст и ελληνικά",
    "Arabic: مرحبا بالعالم",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot",
    "I'm sure you'll see they've done it, we'd've known. DON'T SHOUT, It'S fine",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text<|im_end|>",
    "URL: https://example.com/path?query=1&b=2#frag",
    "email@example.com, @mentions and #hashtags",
    "a\n\n\n\nb",
    "      ",
    "\n",
    "x",
    "tabs\t\t\tand\u00a0nbsp\u2003em-space",
    "Mixed123Numbers456And789Letters",
    "$$$ ### %%% &&& *** !!! ???",
    "The year 2024 had 366 days; 1,000,000 people.",
    "ÀÁÂÃÄÅ àáâãäå ÇÈÉÊË",
    "∑∫∂√∞≈≠≤≥ math symbols",
    "JSON: {\"key\": [1, 2, {\"nested\": null}]}",
]

PRE_TOKENIZERS = {
    "converted": None,  # as transformers converted the GGUF
    "smollm2": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
    "llama3_regex": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
}

LLAMA3_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                   "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
                   "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                   "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
                   "<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "  padded  "}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Tell me a joke."}],
]


def greedy(model, ids, n):
    """Greedy tokens and, per step, the logit gap between the top two candidates (a bf16
    backend may legitimately pick either of two tokens closer than its rounding)."""
    out, margins = [], []
    cur = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            logits = model(cur).logits[0, -1]
            top = torch.topk(logits, 2)
            nxt = int(top.indices[0])
            out.append(nxt)
            margins.append(round(float(top.values[0] - top.values[1]), 5))
            cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
    return out, margins


def model_golden(name, model, prompts, all_positions):
    entries = []
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        tokens, margins = greedy(model, ids, GREEDY_TOKENS)
        e = {"prompt_ids": ids, "greedy": tokens, "greedy_margins": margins}
        if all_positions:
            e["logits"] = [[round(float(x), 6) for x in row] for row in logits]
        else:  # full vocabulary at the last position, as raw little-endian float32
            f = f"{name}_prompt{i}_last_logits.f32"
            (GOLDENS / "models" / f).write_bytes(struct.pack(f"<{logits.shape[1]}f", *logits[-1].tolist()))
            e["last_logits_file"] = f
            e["top1"] = int(logits[-1].argmax())
        entries.append(e)
    (GOLDENS / "models" / f"{name}.json").write_text(json.dumps({"model": name, "prompts": entries}, indent=1))


def main(gguf_path):
    gguf_path = Path(gguf_path)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    smol = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    prompts = [tok(chat, add_special_tokens=False)["input_ids"],
               tok("The quick brown fox")["input_ids"],
               tok("def fibonacci(n):\n    ")["input_ids"]]
    model_golden("smollm2", smol, prompts, all_positions=False)

    g = torch.Generator().manual_seed(7)
    for name in ["tiny-llama31", "tiny-qwen2", "tiny-mistral"]:
        m = AutoModelForCausalLM.from_pretrained(GOLDENS / "models" / name, dtype=torch.float32).eval()
        ps = [torch.randint(3, 512, (n,), generator=g).tolist() for n in (1, 9, 23)]
        model_golden(name, m, ps, all_positions=True)

    # Tokenizer goldens.
    tdir = GOLDENS / "tokenizer"
    tdir.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(tdir / "smollm2_tokenizer.json"))
    base = json.loads((tdir / "smollm2_tokenizer.json").read_text())
    cases = []
    for variant, pre in PRE_TOKENIZERS.items():
        j = json.loads(json.dumps(base))
        if pre is not None:
            j["pre_tokenizer"] = pre
        if variant == "llama3_regex":
            j["model"]["ignore_merges"] = True
        t = Tokenizer.from_str(json.dumps(j))
        cases.append({"variant": variant, "pre_tokenizer": j["pre_tokenizer"],
                      "ignore_merges": j["model"].get("ignore_merges", False),
                      "encodings": [{"text": s, "ids": t.encode(s, add_special_tokens=True).ids} for s in CORPUS]})
    (tdir / "smollm2_corpus.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False))

    # Chat template goldens (Jinja through transformers).
    out = []
    for conv in CONVERSATIONS:
        out.append({"messages": conv,
                    "chatml_smollm2": tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True),
                    "llama3": tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True,
                                                      chat_template=LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>")})
    (GOLDENS / "chat_templates.json").write_text(json.dumps({"llama3_template": LLAMA3_TEMPLATE, "cases": out},
                                                            indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
