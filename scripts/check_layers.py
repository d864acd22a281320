#!/usr/bin/env python3
"""Fails when a source file includes a header against the layer directions of docs/architecture.md.

The "## Layers" section there holds the table (folder | may include | design note) and the known exceptions
(`file` → `header`, ... lines). Every #include "..." of kernels/, runtime/, parallel/ and launcher/
files that names another folder's header must be allowed by the table or listed; a listed
exception that no longer occurs fails too, so the list stays true.

Usage: python3 scripts/check_layers.py [REPO_ROOT]
"""
import re
import sys
from pathlib import Path

ROOTS = ("kernels", "runtime", "parallel", "launcher")
SOURCES = (".h", ".cc", ".cu", ".cuh", ".inc")


def folder_of(path):
    parts = path.split("/")
    if parts[0] in ("kernels", "runtime") and len(parts) > 2:
        return parts[0] + "/" + parts[1]
    return parts[0]


def read_rules(doc):
    text = doc.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    allowed = {}
    # | folder | may include | design note | (the note is for people; only the first two are read)
    for row in re.findall(r"^\| ([a-z/]+) \|([^|\n]*)\|(?:[^|\n]*\|)?$", section, re.M):
        if row[0] == "folder":
            continue
        allowed[row[0]] = {x.strip() for x in row[1].split(",") if x.strip()}
    exceptions = set()
    for line in section.splitlines():
        m = re.match(r"- `([^`]+)` → (.*?):", line)
        if m:
            for header in re.findall(r"`([^`]+)`", m.group(2)):
                exceptions.add((m.group(1), header))
    return allowed, exceptions


def main(root):
    root = Path(root)
    allowed, exceptions = read_rules(root / "docs" / "architecture.md")
    if not allowed:
        print("check_layers: no layer table found in docs/architecture.md")
        return 1
    errors, seen = [], set()
    for top in ROOTS:
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in SOURCES:
                continue
            rel = path.relative_to(root).as_posix()
            src = folder_of(rel)
            if src not in allowed:
                errors.append(f"{rel}: folder '{src}' has no row in the layer table of docs/architecture.md")
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                if not m or not m.group(1).startswith(tuple(t + "/" for t in ROOTS)):
                    continue
                header = m.group(1)
                dst = folder_of(header)
                if dst == src or dst in allowed[src]:
                    continue
                if (rel, header) in exceptions:
                    seen.add((rel, header))
                    continue
                errors.append(f"{rel}:{n}: includes {header}: '{src}' may not include from '{dst}' "
                              f"(docs/architecture.md, Layers)")
    for rel, header in sorted(exceptions - seen):
        errors.append(f"docs/architecture.md lists {rel} → {header} as an exception, but it no longer occurs: remove it")
    for e in errors:
        print(e)
    print(f"check_layers: {len(errors)} problem(s); {len(seen)} known exception(s) in use")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent))
