#!/usr/bin/env bash
# fresh-check.sh — does the README's set-up work on a really fresh Debian 12?
#
#   sudo bash scripts/fresh-check.sh [ROOT]      (ROOT default /var/tmp/patchead-fresh-root)
#
# Builds a minimal Debian 12 (bookworm) root with debootstrap from http://deb.debian.org/debian,
# puts a clean clone of this repository's committed HEAD in it (uncommitted changes are NOT
# checked), and runs, inside `chroot` as root with a clean environment:
#   case "debian":  the README's two commands, as written, in /root/patchead
#       1. bash scripts/install-deps.sh && make && make weights && bash examples/run.sh
#       2. bash scripts/install-deps.sh && make test
#   case "pyenv":   the same two commands in a second clean clone (/root/patchead-pyenv), with a
#       pyenv-style `python3` first on PATH: a shim that runs Debian's interpreter with -S,
#       so it sees no site packages — no numpy, no pip (the case of issue #9).
# and prints PASS/FAIL and the wall time of each command, then one summary block.
# The root lives outside the repository and is deleted at the end (FRESH_KEEP=1 keeps it).
#
# Network inside the root: the host's /etc/resolv.conf, /etc/pip.conf and its local CA
# certificates (/usr/local/share/ca-certificates, e.g. an egress proxy's) are copied in;
# /proc, /sys, /dev and /dev/pts are mounted and unmounted on exit (trap), whatever happens.
# Needs: root, debootstrap, git. Takes a while (debootstrap + two builds + two test runs).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${1:-/var/tmp/patchead-fresh-root}
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
LOG=${FRESH_LOG:-$ROOT.log}

die() { echo "fresh-check: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap not installed (apt-get install debootstrap)"
case "$ROOT" in "$REPO" | "$REPO"/*) die "$ROOT is inside the repository; use a path outside it" ;; esac
[ -e "$ROOT" ] && die "$ROOT exists; remove it or pass another path"
[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] &&
    echo "fresh-check: note: uncommitted changes are not part of the check (HEAD only)"
HEAD=$(git -C "$REPO" rev-parse HEAD) || die "$REPO is not a git checkout"

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null; done
    if [ "${FRESH_KEEP:-0}" != 1 ] && [ -d "$ROOT" ]; then
        # only after every mount is gone: never delete through a bind mount of the host's /dev
        if ! grep -q " $ROOT/" /proc/mounts; then rm -rf --one-file-system "$ROOT"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results=()
step() { # step LABEL COMMAND...: run, time, record PASS/FAIL
    local label=$1; shift
    local t0 t1 rc
    t0=$(date +%s)
    echo "=== $label" | tee -a "$LOG"
    "$@" >>"$LOG" 2>&1
    rc=$?
    t1=$(date +%s)
    local verdict=PASS
    [ $rc -eq 0 ] || verdict="FAIL (exit $rc)"
    results+=("$(printf '%-58s %-14s %5ds' "$label" "$verdict" $((t1 - t0)))")
    echo "${results[-1]}"
    return $rc
}
in_root() { # a clean environment inside the root, as a fresh login would have
    chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "$1"
}

: >"$LOG"
echo "fresh-check: $REPO @ $HEAD -> $ROOT (log: $LOG)"
step "debootstrap bookworm (minbase)" \
    debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" || exit 1

cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
# dev/pts too: tests that need a terminal (the progress bar under script(1)) open a pty
for m in proc sys dev dev/pts; do
    mkdir -p "$ROOT/$m"
    case $m in
        proc) mount -t proc proc "$ROOT/proc" ;;
        sys) mount -t sysfs sysfs "$ROOT/sys" ;;
        dev) mount --bind /dev "$ROOT/dev" ;;
        dev/pts) mount --bind /dev/pts "$ROOT/dev/pts" ;;
    esac || die "cannot mount $ROOT/$m"
    mounted+=("$ROOT/$m")
done

# A pyenv-style python3 without numpy or pip: Debian's interpreter without site packages.
mkdir -p "$ROOT/opt/pyenv-shims"
printf '#!/bin/sh\nexec /usr/bin/python3 -S "$@"\n' >"$ROOT/opt/pyenv-shims/python3"
chmod +x "$ROOT/opt/pyenv-shims/python3"

for dir in patchead patchead-pyenv; do
    git clone -q --no-checkout "$REPO" "$ROOT/root/$dir" &&
        git -c advice.detachedHead=false -C "$ROOT/root/$dir" checkout -q "$HEAD" ||
        die "cannot clone $REPO into the root"
done

CMD1='bash scripts/install-deps.sh && make && make weights && bash examples/run.sh'
CMD2='bash scripts/install-deps.sh && make test'
fails=0
step "debian: $CMD1" in_root "cd /root/patchead && $CMD1" || fails=$((fails + 1))
step "debian: $CMD2" in_root "cd /root/patchead && $CMD2" || fails=$((fails + 1))
SHIM='export PATH=/opt/pyenv-shims:$PATH; python3 -c "import numpy" 2>/dev/null && exit 99;'
step "pyenv python3 first: $CMD1" in_root "$SHIM cd /root/patchead-pyenv && $CMD1" ||
    fails=$((fails + 1))
step "pyenv python3 first: $CMD2" in_root "$SHIM cd /root/patchead-pyenv && $CMD2" ||
    fails=$((fails + 1))
# the test totals of each `make test`, as the suite printed them
summary_lines=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG")

echo
echo "fresh-check summary ($HEAD, Debian 12 bookworm minbase, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '%s\n' "${results[@]}"
[ -n "$summary_lines" ] && sed 's/^/make test: /' <<<"$summary_lines"
if [ $fails -eq 0 ]; then echo "fresh-check: PASS"; else echo "fresh-check: FAIL ($fails command(s); see $LOG)"; fi
[ $fails -eq 0 ]
