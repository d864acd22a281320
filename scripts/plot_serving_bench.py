#!/usr/bin/env python3
"""Plots `kvshard bench --url ... --result-json R.json` results as a PNG: the distributions (CDFs)
of time to first token, time per output token, inter-token latency and end-to-end latency, one
line per result file (e.g. one per request rate), with p50/p90/p99 marked.

Usage: python3 scripts/plot_serving_bench.py OUT.png R1.json [R2.json ...]
Needs matplotlib (pip install matplotlib).
"""
import json
import sys


def load(path):
    with open(path) as f:
        r = json.load(f)
    if "samples" not in r:
        raise SystemExit(f"{path}: no per-request samples (written by an older kvshard bench?)")
    return r


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    out, paths = argv[1], argv[2:]
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    results = [load(p) for p in paths]
    panels = [("ttft_ms", "time to first token (ms)"), ("tpot_ms", "time per output token (ms)"),
              ("itl_ms", "inter-token latency (ms)"), ("e2e_ms", "end-to-end latency (ms)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, title) in zip(axes.flat, panels):
        for path, r in zip(paths, results):
            xs = sorted(r["samples"].get(key, []))
            if not xs:
                continue
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            rate = r.get("rate", 0)
            label = f"{r.get('model', '?')} @ {rate:g} req/s" if rate else f"{r.get('model', '?')} @ inf"
            line, = ax.step(xs, ys, where="post", label=label)
            for q in ("p50", "p90", "p99"):
                ax.axvline(r[key][q], color=line.get_color(), linestyle=":", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("ms (dotted: p50, p90, p99)")
        ax.set_ylabel("share of requests" if key != "itl_ms" else "share of gaps")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    summary = "; ".join(f"{r['output_throughput']:.0f} output tok/s, {r['request_throughput']:.2f} req/s "
                        f"({r['completed']}/{r['num_prompts']} ok)" for r in results)
    fig.suptitle(f"kvshard serving benchmark: {summary}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
