"""Build the patchead extension (patchead._core) over the C library of this checkout.

The extension is a plain CPython C-API module (no numpy headers, no cffi): it passes
arrays through the buffer protocol and numpy wraps them on the Python side.

The library code comes from the repository this folder sits in (../src, ../include):
`make` builds it position-independent (EXTRA_CFLAGS=-fPIC) into a BUILD folder of its
own, with the Makefile's own flags, so the numbers equal the CLI's bit for bit; the link
list comes from `make print-ldlibs`, so it is written in one place only (the Makefile).

pip may run this file from a temporary copy of python/: the checkout is then found
through PATCHEAD_ROOT, or the directory pip was started from and its parents.
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def is_checkout(path):
    return (path / "include" / "patchead.h").is_file() and (path / "Makefile").is_file() \
        and (path / "src").is_dir()


def find_root():
    candidates = []
    if os.environ.get("PATCHEAD_ROOT"):
        candidates.append(Path(os.environ["PATCHEAD_ROOT"]))
    candidates.append(HERE.parent)
    cwd = Path.cwd().resolve()
    candidates += [cwd, *cwd.parents]
    for c in candidates:
        if is_checkout(c.resolve()):
            return c.resolve()
    sys.exit("patchead: cannot find the patchead checkout (include/patchead.h, src/, Makefile) "
             "above %s; install with `pip install ./python` from the repository root or set "
             "PATCHEAD_ROOT" % HERE)


class BuildWithLibrary(build_ext):
    """Runs make for the PIC library before compiling the extension."""

    def run(self):
        root = find_root()
        # Reused between installs (make only recompiles what changed); ignored by git.
        pic = Path(os.environ.get("PATCHEAD_PIC_BUILD", root / "build" / "python-pic")).resolve()
        env = dict(os.environ)
        env.pop("MAKEFLAGS", None)  # never inherit SANITIZE=1 etc. from a calling make
        env.pop("MFLAGS", None)
        jobs = os.environ.get("PATCHEAD_MAKE_JOBS", str(min(os.cpu_count() or 1, 8)))
        make = ["make", "-C", str(root), "SANITIZE=0", "BUILD=%s" % pic]
        subprocess.check_call(make + ["-j%s" % jobs, "EXTRA_CFLAGS=-fPIC", str(pic / "libpatchead.a")],
                              env=env)
        libs = subprocess.check_output(make + ["-s", "print-ldlibs"], env=env, text=True)
        for ext in self.extensions:
            ext.include_dirs.append(str(root / "include"))
            ext.extra_objects.append(str(pic / "libpatchead.a"))
            ext.extra_link_args += shlex.split(libs)
            ext.depends.append(str(pic / "libpatchead.a"))
        super().run()


def library_version():
    """PE_VERSION from include/patchead.h: the package carries the library's version."""
    for line in (find_root() / "include" / "patchead.h").read_text().splitlines():
        if line.startswith("#define PE_VERSION"):
            return line.split('"')[1]
    sys.exit("patchead: no PE_VERSION in include/patchead.h")


setup(
    version=library_version(),
    ext_modules=[Extension("patchead._core", sources=["patchead/_core.c"],
                           extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror"])],
    cmdclass={"build_ext": BuildWithLibrary},
)
