#!/usr/bin/env bash
# cli_scale.sh — `patchead zeroshot` / `eval` at scale, end to end on the bundled tire
# examples (7 images) with the real MobileNetV2 weights (SKIP when absent):
# --comparators (R >= n-1 gives the full batch's bytes; a sample differs, repeats with its
# seed), --spill (same bytes as RAM, nothing left in the folder), the memory guard
# (--mem-limit: refused with the estimate, no output written), bad values.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=weights/mobilenet_v2
EX=examples/tire
T=$(mktemp -d /tmp/pe_cli_scale.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }

if "$PATCHEAD" zeroshot --help | grep -q -- "--comparators R"; then pass scale_help
else fail scale_help "zeroshot --help does not describe --comparators"; fi
for c in zeroshot eval; do
    h=$("$PATCHEAD" $c --help)
    if grep -q -- "--max-time SECONDS" <<<"$h" && grep -q -- "--spill DIR" <<<"$h" &&
        grep -q -- "--mem-limit SIZE" <<<"$h"; then pass "scale_help_$c"
    else fail "scale_help_$c" "$c --help lacks --max-time, --spill or --mem-limit"; fi
done
"$PATCHEAD" zeroshot --model x --comparators 0 a b >/dev/null 2>"$T/err"; rc=$?
check scale_bad_comparators test "$rc" -eq 2 -a -n "$(grep -e '--comparators' "$T/err")"
"$PATCHEAD" zeroshot --model x --mem-limit lots a b >/dev/null 2>"$T/err"; rc=$?
check scale_bad_mem_limit test "$rc" -eq 2 -a -n "$(grep -e '--mem-limit' "$T/err")"

"$PATCHEAD" zeroshot --model x --spill "$T" --align a b >/dev/null 2>"$T/err"; rc=$?
check scale_spill_align_usage test "$rc" -eq 2 -a -n "$(grep -e '--spill cannot' "$T/err")"

if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "SKIP cli_scale: $MODEL absent (make weights)"
    exit 0
fi
zs() { timeout 300 "$PATCHEAD" zeroshot --quiet --model "$MODEL" --size 224 --no-maps --threads 2 "$@"; }

zs --out "$T/full" "$EX" 2>"$T/err"
check scale_full_ok test $? -eq 0 -a "$(wc -l < "$T/full/scores.csv")" -eq 8
# 7 images: R = 6 = n-1 (and anything above) is the full batch, byte for byte
zs --comparators 6 --comparator-seed 3 --out "$T/r6" "$EX" 2>>"$T/err"
check scale_r_full_identical cmp -s "$T/full/scores.csv" "$T/r6/scores.csv"
zs --comparators 100 --out "$T/r100" "$EX" 2>>"$T/err"
check scale_r_above_identical cmp -s "$T/full/scores.csv" "$T/r100/scores.csv"
# a real sample: other scores, every row scored, and the same seed repeats them
zs --comparators 2 --comparator-seed 1 --out "$T/r2a" "$EX" 2>>"$T/err"
zs --comparators 2 --comparator-seed 1 --out "$T/r2b" "$EX" 2>>"$T/err"
check scale_sample_differs test -n "$(cmp "$T/full/scores.csv" "$T/r2a/scores.csv" 2>&1)"
check scale_sample_all_scored test "$(grep -c ',0\.[0-9]' "$T/r2a/scores.csv")" -eq 7
check scale_sample_seeded cmp -s "$T/r2a/scores.csv" "$T/r2b/scores.csv"

# --spill: features in a mapped file, same bytes, the folder left empty
mkdir -p "$T/spill"
zs --spill "$T/spill" --out "$T/spilled" "$EX" 2>>"$T/err"
check scale_spill_identical cmp -s "$T/full/scores.csv" "$T/spilled/scores.csv"
check scale_spill_cleaned test -z "$(ls -A "$T/spill")"
zs --spill "$T/no/such/dir" --out "$T/spillbad" "$EX" 2>"$T/err"; rc=$?
check scale_spill_bad_dir test "$rc" -eq 1 -a ! -e "$T/spillbad" -a -n "$(grep "$T/no/such/dir" "$T/err")"

# memory guard: refused before anything is allocated, with the estimate and the options
zs --mem-limit 1M --out "$T/guard" "$EX" 2>"$T/err"; rc=$?
check scale_guard_refuses test "$rc" -eq 1 -a ! -e "$T/guard"
check scale_guard_message grep -q "needs about .* MiB (features .*K = 1).*--spill DIR" "$T/err"
zs --mem-limit 1G --out "$T/fits" "$EX" 2>"$T/err"
check scale_guard_allows cmp -s "$T/full/scores.csv" "$T/fits/scores.csv"

# progress bar: only on a terminal; under `script` (util-linux) stderr is one
if command -v script >/dev/null && script -qec true /dev/null >/dev/null 2>&1; then
    timeout 300 script -qec "$PATCHEAD zeroshot --model $MODEL --size 224 --no-maps --threads 2 \
        --comparators 2 --comparator-seed 1 --out $T/tty $EX" /dev/null > "$T/tty.log" 2>&1
    check scale_progress_pairs grep -q "scoring .*\] 7/7" "$T/tty.log"
    check scale_progress_same_scores cmp -s "$T/r2b/scores.csv" "$T/tty/scores.csv"
else
    echo "SKIP scale_progress: no script(1) or no pseudo-terminal (/dev/pts) here"
fi

# eval: --comparators reaches the zero-shot settings and results.json
timeout 300 "$PATCHEAD" eval --quiet --model "$MODEL" --data "$EX" --size 224 --zeroshot \
    --comparators 6 --out "$T/ev6" >/dev/null 2>"$T/err"
timeout 300 "$PATCHEAD" eval --quiet --model "$MODEL" --data "$EX" --size 224 --zeroshot \
    --out "$T/evfull" >/dev/null 2>>"$T/err"
timeout 300 "$PATCHEAD" eval --quiet --model "$MODEL" --data "$EX" --size 224 --zeroshot \
    --comparators 2 --out "$T/ev2" >/dev/null 2>>"$T/err"
check scale_eval_r_full cmp -s "$T/ev6/scores.csv" "$T/evfull/scores.csv"
check scale_eval_sample test -n "$(cmp "$T/ev2/scores.csv" "$T/evfull/scores.csv" 2>&1)"
check scale_eval_json grep -q '"comparators":[[:space:]]*2' "$T/ev2/results.json"

# eval --spill / --mem-limit: the test features of each category in a mapped file (same
# bytes), and the memory guard before anything is allocated (one line, nothing written)
ev=(eval --quiet --model "$MODEL" --data "$EX" --size 224 --zeroshot --shots 1 --seeds 2)
timeout 300 "$PATCHEAD" "${ev[@]}" --out "$T/evram" >/dev/null 2>"$T/err"
mkdir -p "$T/evspill"
timeout 300 "$PATCHEAD" "${ev[@]}" --spill "$T/evspill" --out "$T/evsp" >/dev/null 2>>"$T/err"
check scale_eval_spill_identical cmp -s "$T/evram/scores.csv" "$T/evsp/scores.csv"
check scale_eval_spill_cleaned test -z "$(ls -A "$T/evspill")" -a -s "$T/evram/scores.csv"
timeout 300 "$PATCHEAD" "${ev[@]}" --spill "$T/no/such/dir" --out "$T/evspbad" >/dev/null 2>"$T/err"
rc=$?
check scale_eval_spill_bad_dir test "$rc" -eq 1 -a ! -e "$T/evspbad" -a -n "$(grep "$T/no/such/dir" "$T/err")"
timeout 300 "$PATCHEAD" "${ev[@]}" --mem-limit 1M --out "$T/evguard" >/dev/null 2>"$T/err"; rc=$?
check scale_eval_guard_refuses test "$rc" -eq 1 -a ! -e "$T/evguard" -a "$(wc -l < "$T/err")" -eq 1
check scale_eval_guard_message grep -q \
    "category tire (4 test + 2 reference images .*needs about .* MiB (features .*over the limit of 1.00 MiB (MemAvailable .*--spill DIR.*--max-test N" "$T/err"
check scale_eval_guard_leaves_nothing test -z "$(ls -A "$T" | grep '^\.evguard')"
timeout 300 "$PATCHEAD" "${ev[@]}" --mem-limit 1G --out "$T/evfits" >/dev/null 2>"$T/err"
check scale_eval_guard_allows cmp -s "$T/evram/scores.csv" "$T/evfits/scores.csv"

# time guard: a short calibration before the bulk of the work; the estimate is printed
# (pairs from the schedule: 21 for 7 images, 7 with R = 2) and --max-time refuses above it
zt() { timeout 300 "$PATCHEAD" zeroshot --model "$MODEL" --size 224 --no-maps --threads 2 "$@"; }
zt --out "$T/tfull" "$EX" 2>"$T/err"
check scale_time_estimate_full grep -q \
    "zero-shot batch of 7 images: about .*extraction ~.*(7 images at .* ms) + scoring ~.*(21 pairs at .* ms)" "$T/err"
zt --comparators 2 --out "$T/tr2" "$EX" 2>"$T/err"
check scale_time_estimate_sampled grep -q "scoring ~.*(7 pairs at" "$T/err"
zt --max-time 0.001 --out "$T/tguard" "$EX" 2>"$T/err"; rc=$?
check scale_time_refuses test "$rc" -eq 1 -a ! -e "$T/tguard" -a "$(wc -l < "$T/err")" -eq 1
check scale_time_message grep -q \
    "error: zero-shot batch of 7 images: estimated .* over --max-time 0.001 s: extraction .*(21 pairs at .*--comparators R, --size S, mpirun -n N)" "$T/err"
check scale_time_leaves_nothing test -z "$(ls -A "$T" | grep '^\.tguard')"
zt --max-time 3600 --out "$T/tfits" "$EX" 2>"$T/err"
check scale_time_allows cmp -s "$T/full/scores.csv" "$T/tfits/scores.csv"
timeout 300 "$PATCHEAD" "${ev[@]}" --max-time 0.001 --out "$T/evtime" >/dev/null 2>"$T/err"; rc=$?
check scale_eval_time_refuses test "$rc" -eq 1 -a ! -e "$T/evtime" -a "$(wc -l < "$T/err")" -eq 1
# 4 test images: zero-shot 6 pairs + 1-shot x 2 seeds x 4 images = 14; 4 test + 2 references
check scale_eval_time_message grep -q \
    "eval of 1 category: estimated .* over --max-time .*(6 images at .*(14 pairs at .*--comparators R" "$T/err"
