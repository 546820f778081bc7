#!/usr/bin/env bash
# Runs every unit-test binary in $BUILD/tests and every tests/cli_*.sh script, each under
# `timeout` (TEST_TIMEOUT seconds, default 900), and prints one final line
#   N passed, N failed, N skipped
# counted from the "PASS name" / "FAIL name: why" / "SKIP name: why" lines. A binary or
# script that exits non-zero without a FAIL line (a crash, a timeout) is one failure.
# Optional real data is found only through PATCHEAD_DATA (see tests/testlib.h).
# TESTS="path ..." runs those tests instead of all (tests/cli_runner.sh uses it).
# Exit status: 0 iff nothing failed and something passed.
set -u
BUILD=${BUILD:-build}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
export PATCHEAD="$BUILD/patchead"
# Same OpenMP wait policy the CLI picks for itself (see cli/main.c).
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ]; then export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000; fi
passed=0 failed=0 skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086 # TESTS is a space-separated list on purpose
for t in ${TESTS:-"$BUILD"/tests/test_* tests/cli_*.sh}; do
    [ -e "$t" ] || continue
    echo "== $t"
    case "$t" in
        *.sh) timeout "$TEST_TIMEOUT" bash "$t" >"$log" 2>&1; rc=$? ;;
        *) timeout "$TEST_TIMEOUT" "$t" >"$log" 2>&1; rc=$? ;;
    esac
    cat "$log"
    p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        if [ "$rc" -eq 124 ]; then echo "FAIL $t: timed out after ${TEST_TIMEOUT}s"
        else echo "FAIL $t: exited with status $rc"; fi
        f=1
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
