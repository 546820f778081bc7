#!/usr/bin/env bash
# Runs every libFuzzer target in $FUZZ_BUILD (make fuzz) for $FUZZ_SECONDS seconds
# (default 45) on a scratch copy of its committed seed corpus (fuzz/corpus/<name>/; the
# committed seeds are never modified) and prints "PASS fuzz_<name>: N execs" or
# "FAIL fuzz_<name>: ..." per target, then "N passed, N failed". A crash leaves its
# reproducer in $FUZZ_ARTIFACTS (default build-fuzz/artifacts/). Each run is bounded by
# `timeout` (FUZZ_SECONDS + 60 s) so a hang in the fuzzer itself fails instead of
# blocking CI. Exit status 0 iff every target passed.
set -u
cd "$(dirname "$0")/.."
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-45}
FUZZ_ARTIFACTS=${FUZZ_ARTIFACTS:-$FUZZ_BUILD/artifacts}
mkdir -p "$FUZZ_ARTIFACTS"
passed=0 failed=0
for bin in "$FUZZ_BUILD"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin" | sed 's/^fuzz_//')
    work=$(mktemp -d)
    cp -r "fuzz/corpus/$name/." "$work/" 2>/dev/null
    log="$FUZZ_ARTIFACTS/$name.log"
    # -rss_limit_mb / -timeout: an input that needs > 2 GiB or > 10 s per run is a finding.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        timeout $((FUZZ_SECONDS + 60)) "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$FUZZ_ARTIFACTS/$name-" \
        "$work" >"$log" 2>&1
    rc=$?
    rm -rf "$work"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    if [ "$rc" -eq 0 ]; then
        echo "PASS fuzz_$name: ${execs:-?} execs in ${FUZZ_SECONDS}s"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz_$name: exit $rc after ${execs:-?} execs (log $log)"
        grep -m3 -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
