#!/usr/bin/env bash
# cli_drift.sh — the drift check of `predict` on real data (docs/BEYOND.md, "Drift alarms").
# The tire's 239 train/good images are split by a fixed rule (md5 of the file name: no
# randomness that differs between awks) into 100 references, 72 calibration images and 67
# held-out normal images. A bank fit on the references (all of them, 224 px, MobileNetV2) and
# calibrated on the 72 must
#   - stay quiet on the 67 held-out train/good images (exchangeable with the calibration),
#   - warn on the dataset's separate test/good images (another acquisition: they score higher),
#   - after `predict --recalibrate` on test/good, stay quiet on test/good with the new bank.
# SKIP without PATCHEAD_DATA or the weights.
. "$(dirname "$0")/lib_cli.sh"
MODEL=weights/mobilenet_v2
TIRE=${PATCHEAD_DATA:-}/mvtec3d_tire
if [ -z "${PATCHEAD_DATA:-}" ] || [ ! -d "$TIRE/train/good" ]; then
    echo "SKIP cli_drift: PATCHEAD_DATA (with mvtec3d_tire) not set"
    exit 0
fi
# absolute: the split and the watch folder link to these files from $T (a relative
# PATCHEAD_DATA, as in the README's PATCHEAD_DATA=../shared/data, would leave them dangling)
TIRE=$(cd "$TIRE" && pwd)
if [ ! -e "$MODEL/model.safetensors" ]; then
    echo "SKIP cli_drift: $MODEL absent (make weights)"
    exit 0
fi
. "$(dirname "$0")/tire_split.sh"
tire_drift_split "$TIRE/train/good"
check drift_split test "$(ls "$T/ref" | wc -l) $(ls "$T/cal" | wc -l) $(ls "$T/held" | wc -l)" = "100 72 67"

timeout 300 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --calibrate "$T/cal" --fpr 0.05 \
    -o "$T/b.pead" "$T/ref" 2>"$T/err"
check drift_fit test $? -eq 0
pr() { # pr NAME BANK INPUTS... : predict, stderr to $T/NAME.err
    local name=$1 bank=$2; shift 2
    timeout 300 "$PATCHEAD" predict --no-maps --bank "$bank" --out "$T/o_$name" "$@" 2>"$T/$name.err"
}
pr held "$T/b.pead" "$T/held"
check drift_held_quiet grep -q "drift check: .* no drift" "$T/held.err"
check drift_held_no_warning sh -c "! grep -q 'warning: drift' '$T/held.err'"
pr good "$T/b.pead" "$TIRE/test/good"
check drift_test_good_warns grep -q "warning: drift: the [0-9]* images judged normal score higher" "$T/good.err"
check drift_warning_one_line test "$(grep -c 'drift' "$T/good.err")" -eq 1
# --recalibrate on the new normal images: threshold and calibration replaced, bank published
pr rec "$T/b.pead" --recalibrate "$TIRE/test/good" "$TIRE/test/good"
check drift_recalibrated_bank test -s "$T/o_rec/recalibrated.pead"
check drift_recalibrate_says grep -q "recalibrated on 25 normal images" "$T/rec.err"
pr after "$T/o_rec/recalibrated.pead" "$TIRE/test/good"
check drift_after_recalibration_quiet grep -q "no drift" "$T/after.err"
check drift_after_scores_written test "$(wc -l <"$T/o_after/scores.csv")" -eq 26
check drift_after_same_scores cmp -s <(cut -d, -f1,2 "$T/o_good/scores.csv") <(cut -d, -f1,2 "$T/o_after/scores.csv")
# an uncalibrated bank has nothing to compare with: no drift line at all
timeout 300 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots 2 -o "$T/u.pead" "$T/ref" 2>/dev/null
pr unc "$T/u.pead" "$T/held"
check drift_uncalibrated_silent sh -c "! grep -q drift '$T/unc.err'"
# --recalibrate on an empty folder: one clear error, nothing published
mkdir -p "$T/empty"
expect_error drift_recalibrate_empty 1 "no images found" "$PATCHEAD" predict --bank "$T/b.pead" \
    --out "$T/none" --recalibrate "$T/empty" "$T/held"
check drift_recalibrate_empty_no_output test ! -e "$T/none"
