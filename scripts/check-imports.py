#!/usr/bin/env python3
"""Fails when a crate's files import each other in a cycle.

For every crate of the workspace it maps each source file to its module path, reads the
paths the file names (`use crate::…`, `use super::…`, and `crate::…` / `super::…` paths in
code), resolves each to the file that defines it, and reports every strongly connected
group of more than one file. Test code (from the first `#[cfg(test)]` line of a file, and
`tests.rs` files) is not counted: a test may look at its parent.

Usage: scripts/check-imports.py [crate-src-dir ...]   (default: every crate's src/)
"""

import os
import re
import sys

CRATES = ["config/src", "geoip/src", "routing/src", "proxy/src", "demo-backend/src"]


def module_files(src):
    """Module path (tuple) → file, for every .rs file under `src`."""
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                mod = ()
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            files[mod] = path
    return files


def code_of(path):
    """The file's non-test code, without comments and string contents."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("#[cfg(test)]"):
                break
            out.append(re.sub(r"//.*", "", line))
    text = "".join(out)
    text = re.sub(r"pub\((?:crate|super|self|in [^)]*)\)", "pub", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand(text):
    """Every `crate::a::b` / `super::a` path in `text`, with `{…}` groups expanded."""
    paths = []
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)*)(::\{)?", text):
        head = m.group(1) + m.group(2)
        if m.group(3):
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            inner = text[m.end() : i - 1]
            parts, depth, cur = [], 0, ""
            for ch in inner:
                if ch == "," and depth == 0:
                    parts.append(cur)
                    cur = ""
                    continue
                depth += {"{": 1, "}": -1}.get(ch, 0)
                cur += ch
            parts.append(cur)
            for p in parts:
                p = p.strip().split(" as ")[0].strip()
                if p and p != "self":
                    paths.extend(expand(head + "::" + p) or [head + "::" + p])
                elif p == "self":
                    paths.append(head)
        else:
            paths.append(head)
    return paths


def resolve(path, current, files):
    """The file (module path) a path names, relative to module `current`."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    else:
        base, rest = current, segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    best = base if base in files else None
    for i in range(1, len(rest) + 1):
        cand = base + tuple(rest[:i])
        if cand in files:
            best = cand
    return best


def cycles(src):
    files = module_files(src)
    graph = {m: set() for m in files}
    for mod, path in files.items():
        if mod and mod[-1] == "tests":
            continue
        code = code_of(path)
        # `use child::X` in a module names its child module `self::child`.
        children = {m[-1] for m in files if len(m) == len(mod) + 1 and m[: len(mod)] == mod}
        code = re.sub(
            r"\buse\s+(\w+)::",
            lambda m: "use self::" + m.group(1) + "::" if m.group(1) in children else m.group(0),
            code,
        )
        for p in expand(code):
            target = resolve(p, mod, files)
            if target is not None and target != mod:
                graph[mod].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(files[c] for c in comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = sys.argv[1:] or [os.path.join(root, c) for c in CRATES]
    bad = 0
    for src in srcs:
        if not os.path.isdir(src):
            continue
        for comp in cycles(src):
            bad += 1
            print("import cycle: " + " -> ".join(os.path.relpath(p, root) for p in comp))
    if bad:
        print(f"{bad} import cycle(s)")
        return 1
    print("no import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
