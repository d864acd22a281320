"""Load and shutdown test of `kvshard serve` on 127.0.0.1 (CPU backend), with raw asyncio clients.

usage: serve_load_test.py KVSHARD_BINARY MODEL_GGUF [STREAMS]
1. STREAMS (default 1024) streaming clients at once, beside ten clients that drip a header one
   byte every 2 s and a /health poller: every stream ends with its usage chunk and [DONE], the
   engine runs many sequences at once (no cap at a thread count), /health answers fast.
2. Protocol: 415 for a text/plain body, 405 with Allow, 431 for a 100 KB header, text content
   parts, null assistant content, the tool role.
3. A non-streaming client that hangs up: its request is aborted and its blocks freed.
4. SIGTERM under load with a short --drain-timeout: every accepted request is answered (finished,
   or an error event / 503), /health says draining, new connections are refused, and the process
   exits 0 within the timeout and its short write grace.
Figures (time to serve everything, /health percentiles) are printed, not asserted tightly: the
bounds below are loose so that a shared CI core passes; docs/performance.md has measured runs.
"""
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
from free_port import free_port  # noqa: E402  (a port outside the ephemeral range)

BIN, MODEL = sys.argv[1], sys.argv[2]
STREAMS = int(sys.argv[3]) if len(sys.argv) > 3 else 1024


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)
    print("ok:", what, flush=True)




async def request(port, method, path, body=None, headers=None, timeout=300):
    """One HTTP/1.1 request on a fresh connection; returns (status, headers, body bytes)."""
    # A connect that is not answered in 10 s is tried again, as real clients do (a burst of a
    # thousand SYNs on loopback can lose one); the answer must still come.
    for attempt in range(3):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), min(timeout, 10))
            break
        except asyncio.TimeoutError:
            if attempt == 2:
                raise
    data = body.encode() if isinstance(body, str) else (body or b"")
    h = {"Host": "x", "Connection": "close", **(headers or {})}
    if body is not None:
        h.setdefault("Content-Type", "application/json")
        h["Content-Length"] = str(len(data))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    writer.write(head.encode() + data)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    if hdrs.get("transfer-encoding") == "chunked":
        out, rest_b = b"", rest
        while rest_b:
            size_line, _, rest_b = rest_b.partition(b"\r\n")
            n = int(size_line or b"0", 16)
            if n == 0:
                break
            out, rest_b = out + rest_b[:n], rest_b[n + 2:]
        rest = out
    return status, hdrs, rest


def sse_events(body):
    return [l[6:] for l in body.decode(errors="replace").split("\n") if l.startswith("data: ")]


async def metrics(port):
    _, _, b = await request(port, "GET", "/metrics")
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(kvshard_\w+) ([-0-9.e+]+)$", b.decode(), re.M)}


async def idle_and_empty(port):
    for _ in range(200):
        m = await metrics(port)
        if m.get("kvshard_requests_running", 1) == 0 and m.get("kvshard_kv_cache_usage_ratio", 1) == 0:
            return True
        await asyncio.sleep(0.1)
    return False


def start(*extra):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--model", MODEL, "--device", "cpu", "--port", str(port), "--served-model-name",
                          "m", "--max-tokens", "4", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            if p.poll() is not None:
                sys.exit("server died at start:\n" + p.stdout.read())
            time.sleep(0.1)
    sys.exit("server did not come up")


async def dripper(port, stop):
    """A client that sends its header one byte every 2 s (slowloris)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for ch in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            if stop.is_set():
                break
            writer.write(bytes([ch]))
            await writer.drain()
            await asyncio.sleep(2)
        writer.close()
    except OSError:
        pass  # closed by the server's header deadline: what should happen


async def health_poller(port, stop, latencies):
    while not stop.is_set():
        t0 = time.monotonic()
        status, _, _ = await request(port, "GET", "/health", timeout=30)
        latencies.append((time.monotonic() - t0, status))
        await asyncio.sleep(0.05)


async def stream_one(port, i):
    body = json.dumps({"prompt": f"Item {i % 50}:", "max_tokens": 2, "stream": True, "ignore_eos": True,
                       "stream_options": {"include_usage": True}})
    status, _, b = await request(port, "POST", "/v1/completions", body, timeout=600)
    events = sse_events(b)
    ok = (status == 200 and events and events[-1] == "[DONE]" and len(events) >= 3 and
          json.loads(events[-2]).get("usage", {}).get("completion_tokens") == 2)
    return ok, status, events[-3:] if events else b[:200]


async def peak_running(port, stop, peak):
    while not stop.is_set():
        m = await metrics(port)
        peak[0] = max(peak[0], m.get("kvshard_requests_running", 0))
        await asyncio.sleep(0.2)


async def phase_concurrency(port):
    stop = asyncio.Event()
    lat, peak = [], [0]
    side = [asyncio.create_task(dripper(port, stop)) for _ in range(10)]
    side += [asyncio.create_task(health_poller(port, stop, lat)), asyncio.create_task(peak_running(port, stop, peak))]
    t0 = time.monotonic()
    async def staggered(i):  # all open within about a second: a burst, not a queue
        await asyncio.sleep(i * 0.001)
        return await stream_one(port, i)

    results = await asyncio.wait_for(asyncio.gather(*(staggered(i) for i in range(STREAMS))), 600)
    wall = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*side, return_exceptions=True)
    bad = [r for r in results if not r[0]]
    check(not bad, f"{STREAMS} concurrent streams all end with usage and [DONE] in {wall:.1f} s "
                   f"(failed: {len(bad)}; first: {bad[:1]})")
    check(peak[0] >= 64, f"the engine ran many sequences at once (peak {peak[0]:.0f} running)")
    ms = sorted(l for l, s in lat)
    p50, p99 = ms[len(ms) // 2] * 1e3, ms[min(len(ms) - 1, int(len(ms) * 0.99))] * 1e3
    print(f"/health under load: {len(ms)} polls, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ms[-1] * 1e3:.1f} ms")
    check(all(s == 200 for _, s in lat) and p99 < 500, f"/health answers under load (p99 {p99:.1f} ms)")


async def phase_protocol(port):
    s, _, b = await request(port, "POST", "/v1/completions", json.dumps({"prompt": "hi"}),
                            {"Content-Type": "text/plain"})
    check(s == 415 and b"not JSON" in b, "415 for a text/plain body (a cross-site simple request)")
    s, h, _ = await request(port, "GET", "/v1/completions")
    check(s == 405 and h.get("allow") == "POST", "405 with Allow: POST for GET on a POST route")
    s, h, _ = await request(port, "POST", "/health", "{}")
    check(s == 405 and h.get("allow") == "GET", "405 with Allow: GET for POST on /health")
    s, _, _ = await request(port, "GET", "/health", headers={"X-Big": "a" * 100_000})
    check(s == 431, "431 for a 100 KB header")
    s, _, _ = await request(port, "GET", "/nope")
    check(s == 404, "404 for an unknown path")
    msgs = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
            {"role": "user", "content": "ok"}]
    s, _, b = await request(port, "POST", "/v1/chat/completions", json.dumps({"messages": msgs, "max_tokens": 2}))
    check(s == 200 and json.loads(b)["usage"]["completion_tokens"] == 2,
          f"text content parts, null assistant content and a tool message are served: {b[:200]!r}")
    s, _, b = await request(port, "POST", "/v1/chat/completions",
                            json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}))
    check(s == 400 and b"image_url" in b, "an image part is refused by name")
    s, _, b = await request(port, "POST", "/v1/chat/completions",
                            json.dumps({"messages": [{"role": "user", "content": None}]}))
    check(s == 400 and b"content" in b, "null content is refused for a user message")
    many = [{"role": "user", "content": "x"}] * 10000
    t0 = time.monotonic()
    s, _, b = await request(port, "POST", "/v1/chat/completions", json.dumps({"messages": many, "max_tokens": 1}))
    took = time.monotonic() - t0
    check(s == 400 and b"maximum context length" in b and took < 2.0,
          f"10,000 messages are rejected for length in {took * 1e3:.0f} ms")
    t0 = time.monotonic()
    s, _, b = await request(port, "POST", "/v1/completions", json.dumps({"prompt": "a" * 500000, "max_tokens": 1}))
    took = time.monotonic() - t0
    check(s == 400 and took < 3.0, f"a 500,000-letter prompt is answered (400: too long) in {took * 1e3:.0f} ms")
    check(await idle_and_empty(port), "after the protocol checks nothing runs and no block is held")


async def phase_hangup(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"prompt": "Tell a long story.", "max_tokens": 400, "ignore_eos": True})
    writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    await writer.drain()
    await asyncio.sleep(1.0)
    m = await metrics(port)
    check(m["kvshard_requests_running"] >= 1, "the non-streaming request runs")
    writer.close()
    check(await idle_and_empty(port), "a non-streaming client that hangs up has its request aborted and blocks freed")


async def phase_sigterm(server, port, drain_s):
    async def long_stream(i):
        body = json.dumps({"prompt": f"Story {i}:", "max_tokens": 400, "stream": True, "ignore_eos": True})
        s, _, b = await request(port, "POST", "/v1/completions", body, timeout=120)
        ev = sse_events(b)
        return s, ev

    async def short_plain(i):
        body = json.dumps({"prompt": f"Q{i}", "max_tokens": 2})
        return await request(port, "POST", "/v1/completions", body, timeout=120)

    tasks = [asyncio.create_task(long_stream(i)) for i in range(12)]
    tasks += [asyncio.create_task(short_plain(i)) for i in range(4)]
    # A probe's keep-alive connection, opened before the signal.
    probe_r, probe_w = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(1.5)
    t0 = time.monotonic()
    server.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    probe_w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    await probe_w.drain()
    answer = await asyncio.wait_for(probe_r.read(), 10)  # the server closes after a draining answer
    probe_w.close()
    check(answer.startswith(b"HTTP/1.1 503") and b"draining" in answer,
          f"/health says draining (503) on an open connection during the drain: {answer[:120]!r}")
    refused = False
    try:
        await request(port, "GET", "/health", timeout=5)
    except OSError:
        refused = True
    check(refused, "new connections are refused once draining")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results[:12]:
        check(not isinstance(r, Exception) and r[0] == 200 and r[1] and r[1][-1] == "[DONE]" and
              ("error" in r[1][-2] or '"finish_reason":"length"' in r[1][-2]),
              f"a stream in flight at SIGTERM ends with an answer (finished or an error event): "
              f"{r if isinstance(r, Exception) else r[1][-2:]}")
    for r in results[12:]:
        check(not isinstance(r, Exception) and r[0] in (200, 503), f"a short request at SIGTERM is answered: {r}")
    code = await asyncio.get_running_loop().run_in_executor(None, lambda: server.wait(timeout=60))
    took = time.monotonic() - t0
    check(code == 0 and took < drain_s + 3, f"the server exits 0 within the drain timeout ({took:.1f} s, "
                                            f"--drain-timeout {drain_s})")


def main():
    # One socket per client: the default soft limit (1024) is below the streams asked for.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server, port = start("--max-seqs", "256", "--max-in-flight", str(STREAMS + 64))
    try:
        asyncio.run(phase_concurrency(port))
        asyncio.run(phase_protocol(port))
        asyncio.run(phase_hangup(port))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    drain_s = 4
    server, port = start("--drain-timeout", str(drain_s))
    try:
        asyncio.run(phase_sigterm(server, port, drain_s))
    finally:
        if server.poll() is None:
            server.kill()
    print("PASS")


main()
