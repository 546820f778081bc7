#!/usr/bin/env python3
"""check_layers.py — the library's layering rules, checked on the source and the objects.

    python3 scripts/check_layers.py [BUILD]      (make lint runs it; BUILD defaults to build)

src/ is a stack of folders (docs/ARCHITECTURE.md), lowest first:

    core < io < compute < nn < score < scale < detect < eval

Rules (each violation is one line naming the files; exit status 1 if any):
  1. no .c or .h file directly in src/; every folder is in LAYERS; at most MAX_FILES files
     in a folder;
  2. includes: a file includes headers of its own folder or of a folder below it;
  3. calls: every global function a library object uses (nm's undefined symbols) and another
     library object defines must be defined in the caller's folder or a folder below it;
  4. no circle of calls among the library's files (strongly connected components of the
     file call graph, from the same nm tables).
Standard library only (any python3 will do), plus nm from binutils.
"""
import os
import re
import subprocess
import sys

LAYERS = ["core", "io", "compute", "nn", "score", "scale", "detect", "eval"]
MAX_FILES = 12
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def rank(folder):
    return LAYERS.index(folder) if folder in LAYERS else -1


def nm_table(obj, undefined):
    args = ["nm", "-u", obj] if undefined else ["nm", "--defined-only", obj]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if undefined:
            syms.add(parts[-1])
        elif len(parts) == 3 and parts[1] in "TDBR":  # global text / data
            syms.add(parts[2])
    return syms


def strongly_connected(nodes, edges):
    """Tarjan's algorithm; returns the components with more than one file."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    src = os.path.join(ROOT, "src")
    problems = []

    # 1. layout
    files = {}  # "folder/name.c" -> folder
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if os.path.isfile(path):
            problems.append(f"src/{entry}: a file directly in src/ (each belongs to a layer folder)")
            continue
        if rank(entry) < 0:
            problems.append(f"src/{entry}/: not a layer folder (known: {', '.join(LAYERS)})")
            continue
        names = sorted(n for n in os.listdir(path) if n.endswith((".c", ".h")))
        if len(names) > MAX_FILES:
            problems.append(f"src/{entry}/: {len(names)} source files, more than {MAX_FILES}")
        for n in names:
            files[f"{entry}/{n}"] = entry

    # 2. includes
    inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    for rel, folder in files.items():
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            text = f.read()
        for target in inc.findall(text):
            if "/" not in target:
                continue  # own folder (or include/patchead.h)
            tf = target.split("/")[0]
            if rank(tf) > rank(folder):
                problems.append(f"src/{rel}: includes {target}, a layer above {folder}/")

    # 3. + 4. calls, from the objects
    defined, used = {}, {}
    for rel, folder in files.items():
        if not rel.endswith(".c"):
            continue
        obj = os.path.join(ROOT, build, "obj", rel[:-2] + ".o")
        if not os.path.exists(obj):
            problems.append(f"{obj}: missing (build the library first: make)")
            continue
        for s in nm_table(obj, False):
            defined[s] = rel
        used[rel] = nm_table(obj, True)
    edges = {}
    for rel, syms in used.items():
        for s in sorted(syms):
            callee = defined.get(s)
            if not callee or callee == rel:
                continue
            edges.setdefault(rel, set()).add(callee)
            if rank(files[callee]) > rank(files[rel]):
                problems.append(f"src/{rel}: calls {s} of src/{callee}, a layer above {files[rel]}/")
    for comp in strongly_connected(used.keys(), edges):
        problems.append("circle of calls among " + " ".join(f"src/{c}" for c in comp))

    for p in problems:
        print(f"layers: {p}")
    n_edges = sum(len(v) for v in edges.values())
    if problems:
        print(f"layers: {len(problems)} problem(s)")
        return 1
    print(f"layers: ok ({len(files)} files in {len(LAYERS)} layers, {n_edges} file-to-file call "
          "edges, none upward, no circle)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
