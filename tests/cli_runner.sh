#!/usr/bin/env bash
# cli_runner.sh — tests/run.sh counts honestly: PASS, FAIL and SKIP lines separately, a
# crash without a FAIL line and a timeout are failures, the closing line is
# "N passed, N failed, N skipped" and the exit status is non-zero when anything failed.
# Runs tests/run.sh on a few fake tests (TESTS=...), not on the real suite.
set -u
T=$(mktemp -d /tmp/pe_cli_runner.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
mk() { printf '#!/usr/bin/env bash\n%s\n' "$2" >"$T/$1"; chmod +x "$T/$1"; }
mk ok.sh 'echo "PASS a"; echo "PASS b"'
mk skip.sh 'echo "PASS c"; echo "SKIP d: no data"; echo "SKIP e: no weights"'
mk bad.sh 'echo "PASS f"; echo "FAIL g: wrong"; exit 1'
mk crash 'echo "PASS h"; kill -SEGV $$'
mk slow.sh 'sleep 30; echo "PASS never"'

run() { TESTS="$*" TEST_TIMEOUT=3 timeout 60 bash tests/run.sh >"$T/out" 2>&1; }
run "$T/ok.sh" "$T/skip.sh"
rc=$?
line=$(tail -n1 "$T/out")
[ "$line" = "3 passed, 0 failed, 2 skipped" ] && [ $rc -eq 0 ] && pass runner_counts_skips ||
    fail runner_counts_skips "got '$line', exit $rc"

run "$T/ok.sh" "$T/bad.sh" "$T/crash" "$T/slow.sh" "$T/skip.sh"
rc=$?
line=$(tail -n1 "$T/out")
[ "$line" = "5 passed, 3 failed, 2 skipped" ] && [ $rc -ne 0 ] && pass runner_counts_failures ||
    fail runner_counts_failures "got '$line', exit $rc"
grep -q "^FAIL $T/crash: exited with status" "$T/out" && grep -q "^FAIL $T/slow.sh: timed out" "$T/out" &&
    pass runner_names_crash_and_timeout || fail runner_names_crash_and_timeout "$(grep '^FAIL' "$T/out" | head -3)"

run "$T/skip.sh" "$T/skip.sh"
rc=$?
[ "$(tail -n1 "$T/out")" = "2 passed, 0 failed, 4 skipped" ] && [ $rc -eq 0 ] && pass runner_skip_is_not_pass ||
    fail runner_skip_is_not_pass "got '$(tail -n1 "$T/out")', exit $rc"
