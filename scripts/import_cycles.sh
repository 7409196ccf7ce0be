#!/usr/bin/env bash
# Checks the rule of ARCHITECTURE.md: no two files under src/ import each
# other, directly or through others. Prints every cycle (a strongly connected
# group of files) and fails if there is one; with -v, prints the edges too.
# With a path prefix (`scripts/import_cycles.sh src/recorder`), fails only for
# cycles that involve a file under it (the others are still printed).
#
# A file imports another when it names an item of the other's module by path
# (`use super::x::Y`, `crate::a::b::f()`, `super::y::g()`, `book::current()`
# from the parent of `book`), in code, not in comments. A `mod x;` declaration is not an import; a parent's
# `pub(crate) use x::Y` is. Paths are resolved the way rustc resolves them,
# inline modules (`mod tests { use super::*; }`) included, to the deepest
# module that is a file.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'EOF'
import os, re, sys

verbose = "-v" in sys.argv[1:]
scopes = [a.rstrip("/") for a in sys.argv[1:] if a != "-v"]
files = {}
for root, _, names in os.walk("src"):
    for n in names:
        if not n.endswith(".rs"):
            continue
        path = os.path.join(root, n)
        parts = os.path.relpath(path, "src")[:-3].split(os.sep)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        files[tuple(parts)] = path

def strip_comments(line):
    # Drops `// ...` outside string literals (approximately: a `//` preceded
    # by an even number of quotes).
    out, quotes = [], 0
    i = 0
    while i < len(line):
        c = line[i]
        if c == '"' and (i == 0 or line[i - 1] != "\\"):
            quotes += 1
        if c == "/" and line[i:i + 2] == "//" and quotes % 2 == 0:
            break
        out.append(c)
        i += 1
    return "".join(out)

def expand_use(tree):
    # `a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]
    tree = tree.strip()
    m = re.match(r"^(.*?)::\{(.*)\}$", tree, re.S)
    if not m:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    prefix, body = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p.strip():
            out += [prefix + "::" + q for q in expand_use(p)]
    return out

def absolute(base, segs):
    # The absolute module path of `segs` seen from module `base`, or None.
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] not in ("super", "self"):
        # A relative path (2018 style) names a child module of this one.
        if tuple(base + [segs[0]]) not in files:
            return None
        segs = ["self"] + segs
    while segs and segs[0] in ("super", "self"):
        if segs[0] == "super":
            base = base[:-1]
        segs = segs[1:]
    return base + [s for s in segs if s != "*"]

refs_of, reexports = {}, {}
for mod, path in files.items():
    src = [strip_comments(l) for l in open(path, encoding="utf-8").read().split("\n")]
    text = "\n".join(src)
    # Inline modules: the module path at each offset.
    spans = []  # (start, end, name)
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        spans.append((m.end(), i, m.group(1)))
    def context(offset):
        inner = [n for (s, e, n) in sorted(spans) if s <= offset < e]
        return list(mod) + inner
    refs, use_spans = [], []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        use_spans.append((m.start(), m.end()))
        for p in expand_use(m.group(1)):
            segs = [s.strip() for s in p.split("::") if s.strip()]
            full = absolute(context(m.start()), segs)
            if full is None:
                continue
            refs.append(full)
            alias = re.search(r"\bas\s+(\w+)", m.group(1))
            if context(m.start()) == list(mod) and segs and segs[-1] not in ("*", "self"):
                reexports.setdefault(mod, {})[segs[-1]] = full
    for m in re.finditer(r"(?<![\w:])(?:\w+)(?:::\w+)+", text):
        if any(a <= m.start() < b for a, b in use_spans):
            continue  # resolved with its `use` above
        segs = m.group(0).split("::")
        full = absolute(context(m.start()), segs)
        if full is not None:
            refs.append(full)
    refs_of[mod] = refs

def resolve(full, depth=0):
    # The file that defines what `full` names, following re-exports
    # (`pub use x::Y` in a lib.rs or mod.rs facade).
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in files:
            target = tuple(full[:k])
            rest = full[k:]
            if rest and depth < 8 and rest[0] in reexports.get(target, {}):
                again = reexports[target][rest[0]] + rest[1:]
                if again != full:
                    return resolve(again, depth + 1)
            return target
    return None

edges = {}
for mod, refs in refs_of.items():
    for full in refs:
        target = resolve(full)
        if target is None or target == mod:
            continue
        edges.setdefault(mod, set()).add(target)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)
sys.setrecursionlimit(10000)
for v in files:
    if v not in index:
        visit(v)

name = lambda m: files[m]
if verbose:
    for a in sorted(edges):
        for b in sorted(edges[a]):
            print(f"{name(a)} -> {name(b)}")
for comp in sccs:
    inside = set(comp)
    print("cycle:", ", ".join(sorted(name(m) for m in comp)))
    for a in sorted(comp):
        for b in sorted(edges.get(a, ())):
            if b in inside:
                print(f"    {name(a)} -> {name(b)}")
print(f"{len(files)} files, {sum(len(v) for v in edges.values())} imports, {len(sccs)} cycles")
def in_scope(comp):
    return not scopes or any(name(m).startswith(p + "/") or name(m) == p for m in comp for p in scopes)
failing = [c for c in sccs if in_scope(c)]
if scopes:
    print(f"{len(failing)} cycles under {', '.join(scopes)}")
sys.exit(1 if failing else 0)
EOF
