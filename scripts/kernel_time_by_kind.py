#!/usr/bin/env python3
"""Where a whole run's GPU time goes, from scripts/kernel_timeline.cc's CSV: kernel time summed by
kind (kernel_timeline.py's families) and by kernel, and the time no kernel ran within the span from
the first kernel's start to the last one's end (launch gaps, host work, copies).

With --long-prompt the span starts at the embedding launch before the first attention kernel
that runs over 0.5 ms (so a short warm-up request and the weights' set-up are left out).

Usage: python3 scripts/kernel_time_by_kind.py TIMELINE.csv [LABEL] [--long-prompt]
"""
import collections
import csv
import sys

from kernel_timeline import kind


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    label = args[1] if len(args) > 1 else args[0]
    spans = sorted((int(r["start_ns"]), int(r["end_ns"]), r["name"]) for r in rows)
    if "--long-prompt" in sys.argv:
        first = next((i for i, (s, e, n) in enumerate(spans) if kind(n) == "attention" and e - s > 500_000), None)
        if first is not None:
            embed = [i for i in range(first) if kind(spans[i][2]) == "embedding"]
            spans = spans[embed[-1] if embed else first:]
    if not spans:
        print(f"## {label}: no kernels")
        return
    by_kind, by_name, count = collections.Counter(), collections.Counter(), collections.Counter()
    busy, cur_start, cur_end = 0, spans[0][0], spans[0][1]
    for start, end, name in spans:
        by_kind[kind(name)] += end - start
        by_name[name[:90]] += end - start
        count[name[:90]] += 1
        if start > cur_end:  # the union of kernel intervals: concurrent kernels count once
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    span = spans[-1][1] - spans[0][0]
    total = sum(by_kind.values())
    print(f"## {label}: {len(spans)} kernels, span {span / 1e6:.1f} ms, a kernel running {busy / 1e6:.1f} ms, "
          f"none {(span - busy) / 1e6:.1f} ms")
    for k, t in by_kind.most_common():
        print(f"| {k} | {t / 1e6:.1f} ms | {100 * t / total:.1f}% |")
    for n, t in by_name.most_common(12):
        print(f"{t / 1e6:10.1f} ms {count[n]:6d}x  {n}")


if __name__ == "__main__":
    main()
