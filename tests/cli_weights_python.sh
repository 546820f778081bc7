#!/usr/bin/env bash
# cli_weights_python.sh — `make weights` does not depend on which python3 comes first on
# PATH: with a pyenv-style python3 that has no numpy (and no pip) first, it still picks a
# Python that has them (Debian's /usr/bin/python3 from install-deps.sh); an explicit
# PATCHEAD_PYTHON without numpy is refused with one clear line. Needs the weights present
# (so nothing is downloaded: the script then only verifies checksums); SKIP otherwise.
set -u
T=$(mktemp -d /tmp/pe_cli_weights_python.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
if [ ! -f weights/mobilenet_v2/model.safetensors ] || [ ! -f weights/efficientnet_lite0/model.safetensors ]; then
    echo "SKIP weights_python: weights absent (make weights)"
    exit 0
fi
# the shim: a real interpreter that sees no site packages, like a bare pyenv build
real=$(command -v /usr/bin/python3 || command -v python3)
mkdir -p "$T/bin"
printf '#!/bin/sh\nexec %s -S "$@"\n' "$real" >"$T/bin/python3"
chmod +x "$T/bin/python3"
if PATH="$T/bin:$PATH" python3 -c 'import numpy' 2>/dev/null; then
    fail weights_python_shim "the shim python3 imports numpy"
    exit 0
fi
PATH="$T/bin:$PATH" timeout 120 bash scripts/make_weights.sh >"$T/out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "make_weights: using " "$T/out" && ! grep -q "using python3 " "$T/out" &&
    grep -q "make_weights: ok" "$T/out"; then
    pass weights_numpyless_python3_first
else
    fail weights_numpyless_python3_first "exit $rc: $(tr '\n' ' ' <"$T/out" | head -c 300)"
fi
PATCHEAD_PYTHON="$T/bin/python3" timeout 60 bash scripts/make_weights.sh >"$T/out" 2>&1
rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <"$T/out")" -eq 1 ] && grep -q "PATCHEAD_PYTHON=.*cannot import numpy" "$T/out" &&
    pass weights_explicit_python_checked ||
    fail weights_explicit_python_checked "exit $rc: $(tr '\n' ' ' <"$T/out" | head -c 300)"
