#!/usr/bin/env bash
# Runs every unit-test binary in $BUILD/tests and every tests/cli_*.sh script and
# prints one final "N passed, N failed" line. Exit status: 0 iff nothing failed.
set -u
BUILD=${BUILD:-build}
export PATCHEAD="$BUILD/patchead"
# Same OpenMP wait policy the CLI picks for itself (see cli/main.c).
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ]; then export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=0; fi
passed=0 failed=0
log=$(mktemp)
for t in "$BUILD"/tests/test_* tests/cli_*.sh; do
    [ -e "$t" ] || continue
    echo "== $t"
    case "$t" in
        *.sh) bash "$t" >"$log" 2>&1; rc=$? ;;
        *) "$t" >"$log" 2>&1; rc=$? ;;
    esac
    cat "$log"
    p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t: exited with status $rc"
        f=1
    fi
    passed=$((passed + p)); failed=$((failed + f))
done
rm -f "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
