"""Chat-template goldens for the SentencePiece model families: transformers' apply_chat_template
(Jinja, transformers 4.57.3) on Llama 2's chat template and Gemma 3's, as published in the
meta-llama/Llama-2-7b-chat-hf and google/gemma-3-270m-it repositories.

Writes tests/goldens/chat_templates_spm.json. Usage (repo root; needs transformers, jinja2):
  python3 tests/reference/make_spm_chat_goldens.py
"""
import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  Hi there!  "}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": " 4. \n"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Bonjour"}, {"role": "user", "content": "\tHow are you?\n"}],
    [{"role": "user", "content": "日本語で答えて 👍🏽"}],
]


def main():
    tok = PreTrainedTokenizerFast(tokenizer_file="tests/goldens/tokenizer/spm_legacy_tokenizer.json",
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cases = []
    for conv in CONVERSATIONS:
        cases.append({
            "messages": conv,
            "llama2": tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, chat_template=LLAMA2_TEMPLATE),
            "gemma3": tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, chat_template=GEMMA3_TEMPLATE,
                                              bos_token="<bos>"),
        })
    out = {"llama2_template": LLAMA2_TEMPLATE, "gemma3_template": GEMMA3_TEMPLATE, "cases": cases}
    Path("tests/goldens/chat_templates_spm.json").write_text(json.dumps(out, indent=1, ensure_ascii=False))
    for c in cases:
        print(repr(c["llama2"]))
        print(repr(c["gemma3"]))


if __name__ == "__main__":
    main()
