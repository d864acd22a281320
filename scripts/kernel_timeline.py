#!/usr/bin/env python3
"""Where a graphed decode step's time goes, from scripts/kernel_timeline.cc's CSV.

The step is the replay of the most frequent CUDA graph; replays start where that graph's first
node comes round again. With programmatic dependent launch a kernel starts before its predecessor
ends (its blocks wait for it), so a kernel's share of the step is how far it moves the step's end:
end_i - end_(i-1) (the first kernel: its own duration). Those shares add up to the step. Printed per
kernel name: launches a step, share a step, and the mean time from start to end (which includes the
waiting); then the kernels grouped by kind.

Usage: python3 scripts/kernel_timeline.py TIMELINE.csv [LABEL]
"""
import collections
import csv
import re
import sys


def kind(name):
    """A short family name for a kernel (GEMV, attention, norms ...)."""
    rules = [("Gemv", "GEMV"), ("gemv", "GEMV (cuBLAS)"), ("gemm", "GEMM (cuBLAS)"), ("Gemm", "GEMM"),
             ("nvjet", "GEMM / GEMV (cuBLAS)"), ("splitKreduce", "cuBLAS split-K reduction"),
             ("Attention", "attention"), ("PagedDecode", "attention"), ("Prefill", "attention"), ("Combine", "attention split merge"), ("Rope", "rope + KV write"),
             ("RmsNorm", "RMSNorm"), ("Gated", "SwiGLU / GeGLU"), ("Quantize", "activation rounding"),
             ("Argmax", "sampling"), ("Sample", "sampling"), ("Embedding", "embedding"), ("Gather", "gather")]
    for key, label in rules:
        if key in name:
            return label
    return "other"


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    label = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    for r in rows:
        r["start_ns"], r["end_ns"] = int(r["start_ns"]), int(r["end_ns"])
        r["graph_id"], r["node_id"] = int(r["graph_id"]), int(r["node_id"])
    graphed = [r for r in rows if r["graph_id"] != 0]
    if not graphed:
        print(f"## {label}: no graph-launched kernels")
        return
    graph = collections.Counter(r["graph_id"] for r in graphed).most_common(1)[0][0]
    ks = sorted((r for r in graphed if r["graph_id"] == graph), key=lambda r: r["start_ns"])
    first = ks[0]["node_id"]
    replays, cur = [], []
    for r in ks:
        if r["node_id"] == first and cur:
            replays.append(cur)
            cur = []
        cur.append(r)
    replays.append(cur)
    n = len(replays[0])
    replays = [p for p in replays if len(p) == n]
    steady = replays[len(replays) // 4:] if len(replays) > 4 else replays  # past the first replays
    share = collections.defaultdict(float)
    dur = collections.defaultdict(float)
    count = collections.Counter()
    spans = []
    for p in steady:
        p = sorted(p, key=lambda r: r["end_ns"])
        spans.append(p[-1]["end_ns"] - p[0]["start_ns"])
        prev_end = None
        for r in p:
            name = re.sub(r"\s+", " ", r["name"])[:110]
            share[name] += (r["end_ns"] - r["start_ns"]) if prev_end is None else max(0, r["end_ns"] - prev_end)
            dur[name] += r["end_ns"] - r["start_ns"]
            count[name] += 1
            prev_end = r["end_ns"] if prev_end is None else max(prev_end, r["end_ns"])
    s = len(steady)
    span = sum(spans) / s / 1e3
    print(f"## {label}: graph {graph}, {len(replays)} replays of {n} kernels, {s} timed; step span {span:.1f} us")
    print("| kernel | a step | share of the step (us) | share | start to end, mean (us) |")
    print("| --- | --- | --- | --- | --- |")
    for name, t in sorted(share.items(), key=lambda kv: -kv[1])[:18]:
        print(f"| {name} | {count[name] // s} | {t / s / 1e3:.1f} | {t / s / 1e3 / span:.1%} | "
              f"{dur[name] / count[name] / 1e3:.2f} |")
    by_kind = collections.defaultdict(float)
    for name, t in share.items():
        by_kind[kind(name)] += t
    print("| kind | share of the step (us) | share |")
    print("| --- | --- | --- |")
    for k, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {t / s / 1e3:.1f} | {t / s / 1e3 / span:.1%} |")


if __name__ == "__main__":
    main()
