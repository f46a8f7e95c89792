#!/usr/bin/env python3
# Usage: python3 .ci/import_circles.py daemon/src [N]  (lists the N largest circles)
"""File-level import graph of daemon/src: an edge A -> B when A names an item of B by a
`crate::`, `super::`, `self::` or child-module path (`use` lines and inline paths, comments
dropped). Prints the strongly connected components (import circles), largest first."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "daemon/src"
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3].split(os.sep)
            if rel[-1] == "mod": rel = rel[:-1]
            if rel == ["lib"]: rel = []
            if rel[:1] == ["bin"] or rel == ["main"]: continue  # other crates (the binaries)
            files[tuple(rel)] = p
def resolve(path):  # the deepest module file the path names
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in files: return tuple(path[:n])
ident = r"[A-Za-z_][A-Za-z0-9_]*"
edges = {m: set() for m in files}
for m, p in files.items():
    src = re.sub(r"//[^\n]*", "", open(p).read())
    # a file's tests are not part of the import structure
    src = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", src)[0]
    children = {c for c in re.findall(r"\bmod (" + ident + r")\s*;", src)}
    pat = r"(?<![A-Za-z0-9_:])((?:crate|self|super)(?:::super)*|" + "|".join(children or ["\x00"]) + r")((?:::" + ident + r")*)(::\{([^}]*)\})?"
    for mt in re.finditer(pat, src):
        head, rest = mt.group(1).split("::"), mt.group(2).strip(":").split("::") if mt.group(2) else []
        if head[0] == "crate": base = []
        elif head[0] == "self": base = list(m)
        elif head[0] == "super": base = list(m)[: len(m) - len(head)]
        else: base = list(m) + [head[0]]
        base = base + [s for s in rest if s]
        targets = [base]
        if mt.group(4):
            targets = [base + t.strip().split("::")[:1] for t in mt.group(4).split(",") if t.strip()]
        for t in targets:
            r = resolve(t)
            if r is not None and r != m and r != ():
                edges[m].add(r)
idx, low, st, on, comps, c = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        comps.append(comp)
for v in edges:
    if v not in idx: sc(v)
comps = sorted((c for c in comps if len(c) > 1), key=len, reverse=True)
print(f"{len(files)} files; import circles (sizes): {[len(c) for c in comps]}")
# A circle inside one module directory is a module and its children; one across top-level
# modules (service and client, config and a face) is a layering error.
across = [c for c in comps if len({m[0] for m in c}) > 1]
print(f"circles across top-level modules: {[sorted({m[0] for m in c}) for c in across]}")
for c in comps[: int(sys.argv[2]) if len(sys.argv) > 2 else 1]:
    for mod in sorted(c): print("  ", files[mod])
