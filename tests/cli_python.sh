#!/usr/bin/env bash
# cli_python.sh — the Python package (python/) end to end: a virtual environment made by
# Debian's python3 (/usr/bin/python3 -m venv), numpy + pytest from PyPI, then exactly what a
# user runs: `pip install ./python` and `import patchead`; then the pytest suite in
# python/tests (CLI equality, bank round trips, bad inputs, memory, threads, evaluate).
# Each pytest PASSED / FAILED / ERROR / SKIPPED line becomes a PASS / FAIL / SKIP line.
#
# The venv is cached in $BUILD/pyvenv (numpy and pytest are installed once); the package is
# reinstalled when python/, src/, include/ or the Makefile change (a stamp of their
# contents), and make only recompiles the library files that changed (build/python-pic).
set -u
BUILD=${BUILD:-build}
if [ "${SANITIZE:-0}" = 1 ] || [ "$BUILD" = build-san ]; then
    # The extension is built at -O2 without sanitizers (setup.py forces SANITIZE=0) and is
    # loaded into an uninstrumented python: ASan would need LD_PRELOAD of libasan into
    # python itself. The library code it runs is the same that the SANITIZE=1 unit and CLI
    # tests cover.
    echo "# cli_python.sh: not run under SANITIZE=1 (see the comment in the script)"
    exit 0
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
VENV="$BUILD/pyvenv"
PATCHEAD=${PATCHEAD:-$BUILD/patchead}
case "$PATCHEAD" in /*) ;; *) PATCHEAD="$ROOT/$PATCHEAD" ;; esac
export PATCHEAD
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

fail() { echo "FAIL $1: $2"; tail -n 15 "$LOG" | sed 's/^/    /'; }

if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "FAIL python_venv: /usr/bin/python3 lacks venv/ensurepip (apt-get install python3-venv; see scripts/install-deps.sh)"
    exit 1
fi
if [ ! -x "$VENV/bin/pip" ] || ! "$VENV/bin/python" -c 'import numpy, pytest' >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! timeout 600 /usr/bin/python3 -m venv "$VENV" >"$LOG" 2>&1 ||
       ! timeout 600 "$VENV/bin/pip" install -q numpy pytest >>"$LOG" 2>&1; then
        fail python_venv "could not create $VENV with numpy and pytest (PyPI reachable?)"
        rm -rf "$VENV"
        exit 1
    fi
fi
echo "PASS python_venv"

# Contents of everything the package is built from.
stamp=$( { find python/pyproject.toml python/setup.py python/patchead src include Makefile \
               -type f \( -name '*.py' -o -name '*.c' -o -name '*.h' -o -name '*.toml' -o -name Makefile \) \
               -print0 | sort -z | xargs -0 sha1sum; } | sha1sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.patchead-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -f "$VENV/.patchead-stamp"
    if ! PATCHEAD_MAKE_JOBS=${PATCHEAD_MAKE_JOBS:-2} timeout 900 "$VENV/bin/pip" install --force-reinstall --no-deps ./python >"$LOG" 2>&1; then
        fail python_install "pip install ./python failed"
        exit 1
    fi
    echo "$stamp" >"$VENV/.patchead-stamp"
fi
want=$(sed -n 's/^#define PE_VERSION "\(.*\)"/\1/p' include/patchead.h)
got=$(cd / && "$VENV/bin/python" -c 'import patchead; print(patchead.__version__)' 2>"$LOG")
if [ "$got" = "$want" ]; then echo "PASS python_install_import"
else fail python_install_import "import patchead printed '$got', expected '$want'"; fi

# bin/pytest (not python -m pytest) keeps the repository's python/ folder off sys.path, so
# the installed package is what is tested.
timeout 1200 "$VENV/bin/pytest" -p no:cacheprovider -rA -q python/tests >"$LOG" 2>&1
rc=$?
awk '
    /^PASSED /  { sub(/^PASSED python\/tests\//, ""); print "PASS python:" $0; next }
    /^FAILED /  { sub(/^FAILED python\/tests\//, ""); sub(/ - /, ": "); print "FAIL python:" $0; next }
    /^ERROR /   { sub(/^ERROR python\/tests\//, ""); sub(/ - /, ": "); print "FAIL python:" $0; next }
    /^SKIPPED / { sub(/^SKIPPED \[[0-9]+\] python\/tests\//, ""); print "SKIP python:" $0; next }
' "$LOG" >"$LOG.lines"
cat "$LOG.lines"
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$LOG.lines"; then
    fail python_pytest "pytest exited with status $rc"
fi
if [ "$rc" -ne 0 ]; then
    # the failure details (assertions, tracebacks) for the log
    sed -n '/= FAILURES =/,/short test summary/p' "$LOG" | head -n 80 | sed 's/^/    /'
fi
rm -f "$LOG.lines"
exit 0
