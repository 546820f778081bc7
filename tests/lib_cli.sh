# lib_cli.sh — helpers for the tests/cli_*.sh scripts (source it; not a test itself):
# PATCHEAD (the binary), a temporary folder $T removed on exit, and one-line checks that
# print "PASS name" / "FAIL name: why".
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
# check NAME COMMAND...: PASS if the command succeeds
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
# expect_error NAME RC NEEDLE COMMAND...: exit status RC and NEEDLE in the one-line stderr
expect_error() {
    local name=$1 want=$2 needle=$3; shift 3
    timeout 120 "$@" >/dev/null 2>"$T/err"; local rc=$?
    if [ "$rc" -eq "$want" ] && grep -q -- "$needle" "$T/err" && [ "$(wc -l < "$T/err")" -eq 1 ]; then
        pass "$name"
    else fail "$name" "rc $rc (want $want), stderr: $(head -c 300 "$T/err")"; fi
}
