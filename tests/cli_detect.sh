#!/usr/bin/env bash
# End-to-end tests of `patchead fit / predict / zeroshot` on the bundled tire examples
# with the real MobileNetV2 weights (SKIP when weights/mobilenet_v2 is absent).
# One "PASS name" / "FAIL name: why" line per check. Runs at --size 320 (defects separate there; 224 is too coarse for the hole) to stay fast.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=weights/mobilenet_v2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
# check NAME CONDITION-COMMAND... : PASS if the command succeeds
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }

for cmd in fit predict zeroshot; do
    if "$PATCHEAD" $cmd --help | grep -q "usage: patchead $cmd"; then pass "help_$cmd"
    else fail "help_$cmd" "no usage text"; fi
done
"$PATCHEAD" predict >/dev/null 2>&1; rc=$?
check usage_error_exit_2 test "$rc" -eq 2

if [ ! -e "$MODEL" ]; then
    echo "SKIP cli_detect: $MODEL absent (make weights)"
    exit 0
fi

EX=examples/tire
# --- fit ---------------------------------------------------------------------
"$PATCHEAD" fit --quiet --model "$MODEL" --size 320 -o "$T/bank.pead" "$EX/train/good" 2>"$T/err"
check fit_ok test $? -eq 0 -a -s "$T/bank.pead"

# --- predict -------------------------------------------------------------------
"$PATCHEAD" predict --quiet --bank "$T/bank.pead" --out "$T/out" "$EX/test" 2>"$T/err"; rc=$?
check predict_ok test "$rc" -eq 0
check predict_csv_rows test "$(wc -l < "$T/out/scores.csv")" -eq 5
expected="path,score,is_anomalous
$EX/test/defect/contamination_000.jpg
$EX/test/defect/hole_000.jpg
$EX/test/good/good_000.jpg
$EX/test/good/good_001.jpg"
check predict_csv_order test "$(cut -d, -f1 "$T/out/scores.csv" | sed '1s/.*/path,score,is_anomalous/')" = "$expected"
check predict_jsonl_rows test "$(wc -l < "$T/out/scores.jsonl")" -eq 4
check predict_maps test -s "$T/out/maps/good_000.npy" -a -s "$T/out/heatmaps/hole_000.png"
# every defect scores above every good image
minbad=$(grep defect "$T/out/scores.csv" | cut -d, -f2 | sort -g | head -1)
maxgood=$(grep /good/ "$T/out/scores.csv" | cut -d, -f2 | sort -g | tail -1)
check predict_defect_above_good awk -v a="$minbad" -v b="$maxgood" 'BEGIN { exit !(a > b) }'
# --threshold overrides the bank's: 0 flags everything
"$PATCHEAD" predict --quiet --no-maps --threshold 0 --bank "$T/bank.pead" --out "$T/out0" "$EX/test/good/good_000.jpg"
check predict_threshold_override test "$(tail -n +2 "$T/out0/scores.csv" | cut -d, -f3 | sort -u)" = 1
check predict_no_maps test ! -e "$T/out0/maps"

# --- zeroshot --------------------------------------------------------------------
"$PATCHEAD" zeroshot --quiet --no-maps --model "$MODEL" --size 320 --out "$T/zs" "$EX" 2>"$T/err"; rc=$?
check zeroshot_ok test "$rc" -eq 0
check zeroshot_rows test "$(wc -l < "$T/zs/scores.csv")" -eq "$(($(find "$EX" -name '*.jpg' | wc -l) + 1))"
top2=$(tail -n +2 "$T/zs/scores.csv" | sort -t, -k2 -g -r | head -2 | cut -d, -f1 | grep -c defect)
check zeroshot_defects_on_top test "$top2" -eq 2
"$PATCHEAD" zeroshot --quiet --no-maps --mask --model "$MODEL" --size 224 --out "$T/zs2" "$EX" 2>"$T/err"; rc=$?
check zeroshot_mask_cnn_refused grep -q "attention" "$T/err"

# --- bad inputs ----------------------------------------------------------------
cp "$T/bank.pead" "$T/corrupt.pead"
printf '\x55' | dd of="$T/corrupt.pead" bs=1 seek=5000 conv=notrunc status=none
"$PATCHEAD" predict --quiet --bank "$T/corrupt.pead" --out "$T/o1" "$EX/test" 2>"$T/err"; rc=$?
check corrupt_bank test "$rc" -eq 1 -a "$(grep -c checksum "$T/err")" -eq 1
head -c 3000 "$T/bank.pead" > "$T/trunc.pead"
"$PATCHEAD" predict --quiet --bank "$T/trunc.pead" --out "$T/o2" "$EX/test" 2>"$T/err"; rc=$?
check truncated_bank test "$rc" -eq 1 -a "$(grep -c truncated "$T/err")" -eq 1
check no_partial_output test ! -e "$T/o1/scores.csv" -a ! -e "$T/o2/scores.csv"
if [ -e weights/efficientnet_lite0 ]; then
    "$PATCHEAD" predict --quiet --model weights/efficientnet_lite0 --bank "$T/bank.pead" --out "$T/o3" "$EX/test" 2>"$T/err"; rc=$?
    check bank_other_model test "$rc" -eq 1 -a "$(grep -c 'fit with mobilenet' "$T/err")" -eq 1
else
    echo "SKIP bank_other_model: weights/efficientnet_lite0 absent"
fi
# a missing input is one unreadable input like any other: reported, its row has no score,
# the others are scored, exit 3
"$PATCHEAD" predict --bank "$T/bank.pead" --no-maps --out "$T/o4" "$T/nope.jpg" "$EX/test/good/good_000.jpg" 2>"$T/err"; rc=$?
check missing_file test "$rc" -eq 3 -a "$(grep -c 'nope.jpg: cannot open (No such file or directory)' "$T/err")" -eq 1 \
    -a "$(grep -c '^[^,]*nope.jpg,,' "$T/o4/scores.csv")" -eq 1 -a "$(grep -c 'good_000.jpg,[0-9]' "$T/o4/scores.csv")" -eq 1
"$PATCHEAD" predict --quiet --bank "$T/missing.pead" --out "$T/o4" "$EX/test" 2>"$T/err"; rc=$?
check missing_bank test "$rc" -eq 1 -a "$(grep -c 'missing.pead' "$T/err")" -eq 1
mkdir -p "$T/empty"
"$PATCHEAD" predict --quiet --bank "$T/bank.pead" --out "$T/o5" "$T/empty" 2>"$T/err"; rc=$?
check empty_folder test "$rc" -eq 1 -a "$(grep -c 'no images' "$T/err")" -eq 1
# an unreadable image among good ones: reported, the rest scored, exit 3
mkdir -p "$T/mixed"
cp "$EX/test/good/good_000.jpg" "$T/mixed/"
printf 'not really a jpeg' > "$T/mixed/broken.jpg"
printf 'notes' > "$T/mixed/readme.txt"
"$PATCHEAD" predict --no-maps --bank "$T/bank.pead" --out "$T/o6" "$T/mixed" 2>"$T/err"; rc=$?
check unreadable_continues test "$rc" -eq 3 -a "$(wc -l < "$T/o6/scores.csv")" -eq 3
check unreadable_empty_score grep -q "^$T/mixed/broken.jpg,," "$T/o6/scores.csv"
check unreadable_reported grep -q "broken.jpg" "$T/err"
check non_image_skipped grep -q "readme.txt: skipped" "$T/err"
check unreadable_jsonl_error grep -q '"error"' "$T/o6/scores.jsonl"
"$PATCHEAD" fit --quiet --model "$MODEL" --size 224 -o "$T/b2.pead" "$T/mixed/broken.jpg" "$EX/train/good" 2>"$T/err"; rc=$?
check fit_unreadable_ref test "$rc" -eq 1 -a ! -e "$T/b2.pead"
# --shots: reproducible sampling
"$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots 2 --seed 3 -o "$T/s1.pead" "$EX/train/good" &&
    "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots 2 --seed 4 -o "$T/s3.pead" "$EX/train/good" &&
"$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots 2 --seed 3 -o "$T/s2.pead" "$EX/train/good"
check shots_reproducible cmp -s "$T/s1.pead" "$T/s2.pead"
check shots_seed_matters test "$(cmp -s "$T/s1.pead" "$T/s3.pead"; echo $?)" -ne 0
"$PATCHEAD" fit --quiet --model "$MODEL" --shots 9 -o "$T/s4.pead" "$EX/train/good" 2>"$T/err"; rc=$?
check shots_too_many test "$rc" -eq 1
exit 0
