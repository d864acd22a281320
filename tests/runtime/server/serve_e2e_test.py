"""End-to-end test of `kvshard serve` with the official `openai` client and raw HTTP.

usage: serve_e2e_test.py KVSHARD_BINARY MODEL_GGUF
Starts the server on the CPU backend, drives it with openai (streaming and not, chat and
completions, n > 1) and with malformed or hostile requests; after each error the server must
still answer and, once idle, hold no KV blocks. Ends with SIGTERM: the in-flight request
completes and the server exits 0.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
from free_port import free_port  # noqa: E402  (a port outside the ephemeral range)

BIN, MODEL = sys.argv[1], sys.argv[2]
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # the repository
NAME = "smollm2"




def start(*extra):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--model", MODEL, "--device", "cpu", "--port", str(port),
                          "--served-model-name", NAME, "--max-tokens", "32", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return p, port
        except Exception:
            if p.poll() is not None:
                sys.exit("server died at start:\n" + p.stdout.read())
            time.sleep(0.1)
    sys.exit("server did not come up")


def raw(port, path, body=None, headers=None, method=None):
    data = body if isinstance(body, (bytes, type(None))) else body.encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def metrics(port):
    _, text, _ = raw(port, "/metrics")
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(kvshard_\w+) ([-0-9.e+]+)$", text, re.M)}


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what)


def idle_and_empty(port):
    for _ in range(100):
        m = metrics(port)
        if m.get("kvshard_requests_running", 1) == 0 and m.get("kvshard_kv_cache_usage_ratio", 1) == 0:
            return True
        time.sleep(0.1)
    print(metrics(port))
    return False


server, port = start()
try:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    check([m.id for m in client.models.list().data] == [NAME], "GET /v1/models lists the served model")

    chat = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                                          max_tokens=20, temperature=0)
    check("Paris" in chat.choices[0].message.content, f"chat answer names Paris: {chat.choices[0].message.content!r}")
    check(chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0, "chat usage is counted")

    comp = client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(comp.choices[0].finish_reason == "length" and len(comp.choices[0].text) > 0, "completion returns text")

    pieces = [c.choices[0].text for c in client.completions.create(model=NAME, prompt="The capital of France is",
                                                                   max_tokens=8, temperature=0, stream=True)]
    check("".join(pieces) == comp.choices[0].text, "streamed completion equals the non-streamed one")

    chunks = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Say hi."}],
                                                 max_tokens=10, stream=True))
    check(chunks[-1].choices[0].finish_reason in ("stop", "length"), "chat stream ends with a finish reason")

    # Log-probabilities, in each API's shape, as the openai client parses them.
    lp = client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2)
    lps = lp.choices[0].logprobs
    check(lp.choices[0].text == comp.choices[0].text and len(lps.tokens) == lp.usage.completion_tokens == 8
          and "".join(lps.tokens) == lp.choices[0].text and all(v <= 0 for v in lps.token_logprobs)
          and all(len(t) >= 1 and abs(max(t.values()) - v) < 1e-5 for t, v in zip(lps.top_logprobs, lps.token_logprobs))
          and lps.text_offset[0] == 0,
          f"completions logprobs: a greedy token is its own most likely alternative: {lps}")
    streamed = [c.choices[0].logprobs for c in client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=1, stream=True)]
    check(sum(len(x.tokens) for x in streamed if x) == 8, "streamed chunks carry every token's logprob once")
    clp = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6,
                                         temperature=0, logprobs=True, top_logprobs=3)
    content = clp.choices[0].logprobs.content
    check(len(content) == clp.usage.completion_tokens and all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)
          and bytes(b for c in content for b in c.bytes).decode("utf-8", "replace") == clp.choices[0].message.content,
          f"chat logprobs: top_logprobs and bytes per token: {content[:2]}")
    check(chat.choices[0].logprobs is None, "no logprobs unless asked")

    two = client.completions.create(model=NAME, prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=4, n=2)
    check(sorted(c.index for c in two.choices) == [0, 1], "n=2 gives two choices")

    # Malformed and hostile requests: OpenAI error JSON, the right code, and the server lives on.
    bad = [
        ("/v1/completions", "{not json", 400, "not valid JSON"),
        ("/v1/completions", json.dumps({"prompt": "hi", "max_tokens": "ten"}), 400, "max_tokens"),
        ("/v1/completions", json.dumps({"prompt": "hi", "max_tokens": -5}), 400, "max_tokens"),
        ("/v1/completions", json.dumps({"prompt": 7}), 400, "prompt"),
        ("/v1/completions", json.dumps({"prompt": [1, -2]}), 400, "token ids"),
        ("/v1/completions", json.dumps({"prompt": [1, 99999999]}), 400, "vocabulary"),
        ("/v1/chat/completions", json.dumps({"messages": [{"role": "user"}]}), 400, "content"),
        ("/v1/completions", json.dumps({"prompt": "hi", "model": "gpt-4"}), 404, "does not exist"),
        ("/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 100000}), 400, "maximum context length"),
        ("/v1/completions", json.dumps({"prompt": "hi", "temperature": -1}), 400, "temperature"),
        ("/v1/completions", json.dumps({"prompt": "hi", "logprobs": 50}), 400, "logprobs"),
        ("/v1/completions", json.dumps({"prompt": "hi", "best_of": 3}), 400, "not supported"),
        ("/v1/completions", json.dumps({"prompt": "x" * (2 << 20)}), 413, "too large"),
    ]
    for path, body, code, words in bad:
        status, text, _ = raw(port, path, body, {"Content-Type": "application/json"})
        err = json.loads(text).get("error", {}) if text.startswith("{") else {}
        check(status == code and words in err.get("message", ""), f"{code} for {body[:40]!r}: {err.get('message')!r}")
        check(raw(port, "/health")[0] == 200, "the server still answers")
    try:
        client.completions.create(model="nope", prompt="hi")
        check(False, "unknown model raises")
    except openai.NotFoundError:
        check(True, "openai raises NotFoundError for an unknown model")

    # A client that disconnects mid-stream: its request is aborted and its blocks freed.
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"prompt": "Write a long story about a dragon.", "max_tokens": 400, "stream": True,
                       "ignore_eos": True})
    s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    got = s.recv(4096)
    check(b"data:" in got or b"200" in got, "the stream started")
    s.close()
    check(idle_and_empty(port), "after the disconnect no request runs and no KV block is held")
    m = metrics(port)
    check(m["kvshard_requests_failed_total"] >= 1, "the abandoned request is counted as aborted")
    check(m["kvshard_time_to_first_token_seconds_count"] >= 5, "latency histograms are filled")
    check("kvshard_kv_slot_utilization_ratio" in m and "kvshard_prefix_cache_hit_ratio" in m,
          "KV slot utilisation and prefix hit rate are exported")
    check(m.get("kvshard_kv_offload_staged_blocks_total") == 0 and m.get("kvshard_kv_offload_blocks_used") == 0,
          "the offload tier's counters are exported (no offload here: zero)")

    # The serving benchmark against this server: Poisson arrivals, percentiles as JSON.
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"kvs_serving_{port}.json")
    bench = subprocess.run([BIN, "bench", "--url", f"http://127.0.0.1:{port}", "--rate", "20", "--num-prompts", "4",
                            "--input-len", "16", "--output-len", "6", "--result-json", out],
                           capture_output=True, text=True, timeout=300)
    res = json.load(open(out)) if bench.returncode == 0 else {}
    check(res.get("completed") == 4 and res["ttft_ms"]["p99"] >= res["ttft_ms"]["p50"] > 0 and res["itl_ms"]["p50"] > 0,
          f"kvshard bench --url reports throughput and TTFT/TPOT/ITL percentiles: {bench.stdout or bench.stderr}")
    check(len(res.get("samples", {}).get("ttft_ms", [])) == 4, "the result keeps every request's TTFT for plots")
    png = out.replace(".json", ".png")
    plot = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot_serving_bench.py"), png, out],
                          capture_output=True, text=True, timeout=120)
    check(plot.returncode == 0 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n",
          f"scripts/plot_serving_bench.py draws the result as a PNG: {plot.stderr[-500:]}")

    # SIGTERM drains: the in-flight request completes, then the server exits 0.
    result = {}

    def long_request():
        result["r"] = client.completions.create(model=NAME, prompt="Count: 1, 2, 3,", max_tokens=40,
                                                extra_body={"ignore_eos": True})

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.5)
    server.send_signal(signal.SIGTERM)
    t.join(timeout=120)
    check(result.get("r") is not None and result["r"].choices[0].finish_reason == "length",
          "the request in flight at SIGTERM completes")
    check(server.wait(timeout=60) == 0, "the server exits 0 after draining")
finally:
    if server.poll() is None:
        server.kill()

# --api-key: 401 without it, served with it.
server, port = start("--api-key", "sekret")
try:
    status, text, _ = raw(port, "/v1/models")
    check(status == 401 and "API key" in json.loads(text)["error"]["message"], "401 without the API key")
    keyed = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sekret")
    check(keyed.completions.create(model=NAME, prompt="Hi", max_tokens=2).choices[0].text is not None,
          "served with the API key")
finally:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
print("PASS")
