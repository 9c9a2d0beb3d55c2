#!/usr/bin/env python3
"""Fails when code in src/ imports something that imports it back, directly or through
others: between top-level modules (`format` -> `sink` -> `format`) and between files
(`format/decoder.rs` -> `format/multiline.rs` -> `format/decoder.rs`). Test modules and a
`mod.rs` declaring or re-exporting its children do not count. It reads `crate::` and
`super::` paths with a regular expression: a lint, not a compiler."""

import glob
import re
import sys

SKIP = ("src/main.rs", "src/config/tests.rs", "src/tail/model_tests.rs")


def module_path(file):
    """src/a/b.rs -> [a, b]; src/a/mod.rs -> [a]; src/lib.rs -> []."""
    parts = file[len("src/"):-len(".rs")].split("/")
    return parts[:-1] if parts[-1] in ("mod", "lib") else parts


def without_tests(text):
    cut = text.find("#[cfg(test)]\nmod tests")
    return text if cut < 0 else text[:cut]


def file_edges(files):
    by_path = {tuple(module_path(f)): f for f in files}

    def resolve(parts):
        for n in range(len(parts), 0, -1):
            if tuple(parts[:n]) in by_path:
                return by_path[tuple(parts[:n])]
        return None

    edges = {}
    for f in files:
        me = module_path(f)
        for m in re.finditer(r"\b(crate|super)((?:::[A-Za-z_]\w*)+)", without_tests(open(f).read())):
            base = [] if m.group(1) == "crate" else me[:-1]
            target = resolve(base + m.group(2).strip(":").split("::"))
            parent = f.endswith(("mod.rs", "lib.rs")) and target and \
                module_path(target)[:len(me)] == me
            if target and target != f and not parent:
                edges.setdefault(f, set()).add(target)
    return edges


def top_edges(edges):
    top = {}
    for a, targets in edges.items():
        for b in targets:
            ma, mb = (module_path(a) or ["lib"])[0], (module_path(b) or ["lib"])[0]
            if ma != mb:
                top.setdefault(ma, set()).add(mb)
    return top


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def main():
    sys.setrecursionlimit(10_000)
    files = [f for f in glob.glob("src/**/*.rs", recursive=True) if f not in SKIP]
    edges = file_edges(files)
    failed = False
    for level, graph in (("module", top_edges(edges)), ("file", edges)):
        for component in cycles(graph):
            print(f"import cycle between {level}s: {' <-> '.join(component)}", file=sys.stderr)
            failed = True
    if not failed:
        print("import-cycles: no module or file imports one that imports it back")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
