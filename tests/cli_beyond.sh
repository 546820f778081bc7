#!/usr/bin/env bash
# End-to-end tests of the options beyond the paper (docs/BEYOND.md) on the bundled tire
# examples with the real MobileNetV2 weights (SKIP when weights/mobilenet_v2 is absent):
# fit --rotations / --flips / --coreset / --window / --calibrate / --fpr, predict's
# p_value column and --fpr, eval's pass-through, and the bad-input paths (one clear line,
# non-zero exit, no bank left behind). Runs at --size 224 to stay fast.
. "$(dirname "$0")/lib_cli.sh"
MODEL=weights/mobilenet_v2

"$PATCHEAD" fit --help | grep -q -- "--rotations N" && "$PATCHEAD" fit --help | grep -q -- "--calibrate X"
check help_fit_beyond test $? -eq 0
"$PATCHEAD" predict --help | grep -q -- "--fpr A"
check help_predict_fpr test $? -eq 0

# usage errors need no weights
expect_error rotations_zero 2 "--rotations" "$PATCHEAD" fit --model x --rotations 0 -o "$T/x.pead" x.png
expect_error calibrate_bad 2 "--calibrate" "$PATCHEAD" fit --model x --calibrate 1.5 -o "$T/x.pead" x.png
expect_error fpr_bad 2 "--fpr" "$PATCHEAD" fit --model x --fpr 2 -o "$T/x.pead" x.png
expect_error coreset_bad 2 "--coreset" "$PATCHEAD" fit --model x --coreset abc -o "$T/x.pead" x.png

if [ ! -e "$MODEL" ]; then
    echo "SKIP cli_beyond: $MODEL absent (make weights)"
    exit 0
fi
EX=examples/tire
FIT=("$PATCHEAD" fit --quiet --model "$MODEL" --size 224)

# --- rotations: the bank holds 4 (8 with --flips) views per reference ----------------------
# (that a turned reference then scores ~0 is checked on pixels in tests/test_beyond.c)
"${FIT[@]}" -o "$T/r1.pead" "$EX/train/good" && "${FIT[@]}" --rotations 4 -o "$T/r4.pead" "$EX/train/good"
check fit_rotations_ok test $? -eq 0 -a -s "$T/r4.pead"
s1=$(stat -c %s "$T/r1.pead"); s4=$(stat -c %s "$T/r4.pead")
check rotations_store_4_views awk -v a="$s1" -v b="$s4" 'BEGIN { exit !(b > 3.9 * a && b < 4.1 * a) }'
"${FIT[@]}" --rotations 4 --flips -o "$T/r4f.pead" "$EX/train/good"
s8=$(stat -c %s "$T/r4f.pead")
check flips_store_8_views awk -v a="$s1" -v b="$s8" 'BEGIN { exit !(b > 7.8 * a && b < 8.2 * a) }'
"$PATCHEAD" predict --quiet --no-maps --bank "$T/r4.pead" --out "$T/pr4" "$EX/test"
check predict_rotations_ok test $? -eq 0 -a "$(wc -l < "$T/pr4/scores.csv")" -eq 5

# --- coreset: 100 % gives the same scores as the per-image bank (K = 1) ---------------------
"${FIT[@]}" --coreset 1.0 -o "$T/c100.pead" "$EX/train/good"
check fit_coreset100_ok test $? -eq 0
"$PATCHEAD" predict --quiet --no-maps --bank "$T/r1.pead" --out "$T/p1" "$EX/test"
"$PATCHEAD" predict --quiet --no-maps --bank "$T/c100.pead" --out "$T/pc" "$EX/test"
check coreset100_equals_bank awk -F, 'NR == FNR { a[FNR] = $2; next } FNR > 1 { d = $2 - a[FNR]; if (d < 0) d = -d; if (d > 1e-5) bad = 1 } END { exit bad }' "$T/p1/scores.csv" "$T/pc/scores.csv"
"${FIT[@]}" --coreset 0.1 --seed 3 -o "$T/c10.pead" "$EX/train/good"
"${FIT[@]}" --coreset 0.1 --seed 3 -o "$T/c10b.pead" "$EX/train/good"
check coreset_deterministic cmp -s "$T/c10.pead" "$T/c10b.pead"
sc=$(stat -c %s "$T/c10.pead")
check coreset_smaller awk -v a="$s1" -v b="$sc" 'BEGIN { exit !(b < 0.15 * a) }'
"$PATCHEAD" predict --quiet --no-maps --bank "$T/c10.pead" --out "$T/pc10" "$EX/test"
# a 10 % coreset only loses nearest neighbours: never below the full bank, and not far above
check coreset10_close_above_full awk -F, 'NR == FNR { a[FNR] = $2; next } FNR > 1 && ($2 < a[FNR] - 1e-6 || $2 > 2 * a[FNR]) { bad = 1 } END { exit bad }' "$T/p1/scores.csv" "$T/pc10/scores.csv"

# --- window -----------------------------------------------------------------------------
"${FIT[@]}" --window 2 -o "$T/w2.pead" "$EX/train/good"
"$PATCHEAD" predict --quiet --no-maps --bank "$T/w2.pead" --out "$T/pw2" "$EX/test"
check predict_window_ok test $? -eq 0 -a "$(wc -l < "$T/pw2/scores.csv")" -eq 5
# a window scores against fewer patches: never lower than global
check window_not_below_global awk -F, 'NR == FNR { a[FNR] = $2; next } FNR > 1 && $2 < a[FNR] - 1e-6 { bad = 1 } END { exit bad }' "$T/p1/scores.csv" "$T/pw2/scores.csv"

# --- calibration ----------------------------------------------------------------------------
"${FIT[@]}" --calibrate "$EX/test/good" --fpr 0.34 -o "$T/cal.pead" "$EX/train/good" 2>"$T/err"
check fit_calibrate_dir_ok test $? -eq 0
"$PATCHEAD" predict --no-maps --bank "$T/cal.pead" --out "$T/pcal" "$EX/test" 2>"$T/err"
check predict_pvalue_column test "$(head -1 "$T/pcal/scores.csv")" = "path,score,is_anomalous,p_value"
# no p_value without a calibration: an uncalibrated bank, zero-shot
check predict_no_pvalue_uncalibrated test "$(head -1 "$T/p1/scores.csv")" = "path,score,is_anomalous"
"$PATCHEAD" zeroshot --quiet --no-maps --model "$MODEL" --size 224 --out "$T/zs" "$EX/test"
check zeroshot_no_pvalue test "$(head -1 "$T/zs/scores.csv")" = "path,score"
check predict_pvalue_range awk -F, 'NR > 1 && !($4 > 0 && $4 <= 1) { bad = 1 } END { exit bad }' "$T/pcal/scores.csv"
# flagged <=> p <= alpha (0.34: with 2 calibration scores, rank ceil(0.66 * 3) = 2 exists)
check flag_iff_pvalue awk -F, 'NR > 1 && (($3 == 1) != ($4 <= 0.34)) { bad = 1 } END { exit bad }' "$T/pcal/scores.csv"
grep -q "for a false-alarm rate of 0.34 (2" "$T/err"
check predict_reports_calibration test $? -eq 0
grep -q '"p_value": ' "$T/pcal/scores.jsonl"
check jsonl_pvalue test $? -eq 0
# too few calibration scores for the rate: said so
"$PATCHEAD" fit --model "$MODEL" --size 224 --fpr 0.05 -o "$T/loo2.pead" "$EX/train/good" 2>"$T/err"
grep -q "too few for a false-alarm rate of 0.05 (need at least 19)" "$T/err"
check loo_too_few_message test $? -eq 0
# predict --fpr re-derives the threshold; an uncalibrated bank refuses it
"$PATCHEAD" predict --quiet --no-maps --fpr 0.5 --bank "$T/cal.pead" --out "$T/pcal2" "$EX/test"
check predict_fpr_ok test $? -eq 0
expect_error predict_fpr_uncalibrated 1 "calibration" "$PATCHEAD" predict --quiet --no-maps --fpr 0.1 --bank "$T/r1.pead" --out "$T/bad" "$EX/test"
# held-out fraction: 3 references, a third held out -> 2 references + 1 calibration image
"${FIT[@]}" --calibrate 0.34 --fpr 0.5 -o "$T/hold.pead" "$EX/train/good" 2>"$T/err"
check fit_holdout_ok test $? -eq 0
expect_error holdout_all 1 "holds out every" "${FIT[@]}" --calibrate 0.99 -o "$T/none.pead" "$EX/train/good"
check holdout_all_no_bank test ! -e "$T/none.pead"

# --- combinations that cannot work: a clear error and no bank -----------------------------
expect_error coreset_window 1 "positional" "${FIT[@]}" --coreset 0.5 --window 1 -o "$T/bad.pead" "$EX/train/good"
check coreset_window_no_bank test ! -e "$T/bad.pead"
expect_error rotations_align 1 "alignment" "${FIT[@]}" --rotations 4 --align -o "$T/bad.pead" "$EX/train/good"
expect_error calibrate_missing 1 "no calibration images" "${FIT[@]}" --calibrate "$T" -o "$T/bad.pead" "$EX/train/good"
check calibrate_missing_no_bank test ! -e "$T/bad.pead"

# --- eval passes the options through ----------------------------------------------------------
if [ -n "${PATCHEAD_DATA:-}" ] && [ -d "$PATCHEAD_DATA/mvtec_leather_subset" ]; then
    timeout 600 "$PATCHEAD" eval --quiet --model "$MODEL" --data "$PATCHEAD_DATA/mvtec_leather_subset" \
        --shots 1 --seeds 1 --size 224 --rotations 4 --window 3 --out "$T/ev" 2>"$T/err"
    check eval_beyond_ok test $? -eq 0 -a -s "$T/ev/results.csv"
    grep -q '"beyond":[[:space:]]*"rotations 4, flips 0, window 3' "$T/ev/results.json"
    check eval_records_beyond test $? -eq 0
else
    echo "SKIP eval_beyond: PATCHEAD_DATA unset or without mvtec_leather_subset"
fi
