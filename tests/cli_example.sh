#!/usr/bin/env bash
# cli_example.sh — the README's first command ends in `bash examples/run.sh`: with its
# default backbone it must flag both bundled defects and neither bundled good tire, with the
# threshold the bank sets itself (leave-one-out over the bundled normal images; nothing is
# tuned on the test images). Also: the run writes a heatmap and a map per input. SKIP when
# the default weights are absent (make weights).
. "$(dirname "$0")/lib_cli.sh"
model=$(sed -n 's/^MODEL=\${MODEL:-\(.*\)}$/\1/p' examples/run.sh)
if [ -z "$model" ]; then
    fail example_default_model "examples/run.sh has no MODEL=\${MODEL:-...} line"
    exit 0
fi
if [ ! -e "$model" ]; then
    echo "SKIP example_run: $model absent (make weights)"
    exit 0
fi
OUT="$T/out/examples" PATCHEAD="$PATCHEAD" timeout 300 bash examples/run.sh >"$T/log" 2>&1
rc=$?
check example_run_exit_0 test "$rc" -eq 0
csv="$T/out/examples/scores.csv"
flag() { awk -F, -v p="$1" '$1 == p { print $3 }' "$csv"; }
for f in defect/contamination_000 defect/hole_000; do
    check "example_flags_${f#defect/}" test "$(flag "examples/tire/test/$f.jpg")" = 1
done
for f in good/good_000 good/good_001; do
    check "example_passes_${f#good/}" test "$(flag "examples/tire/test/$f.jpg")" = 0
done
check example_heatmaps test "$(ls "$T/out/examples/heatmaps" | wc -l)" -eq 4
check example_maps test "$(ls "$T/out/examples/maps" | wc -l)" -eq 4
check example_names_backbone grep -q "$(basename "$model")" "$T/log"

# fit / zeroshot / eval without --model use the default backbone (weights/<default> in the
# working directory, or beside the binary's folder), and say so on stderr
"$PATCHEAD" fit --shots 2 -o "$T/d.pead" examples/tire/train/good >/dev/null 2>"$T/err"
check default_model_fit grep -q "no --model: using the default backbone weights/" "$T/err"
check default_model_bank test -s "$T/d.pead"
abs_pe=$(cd "$(dirname "$PATCHEAD")" && pwd)/$(basename "$PATCHEAD")
abs_ex=$(pwd)/examples/tire
(cd "$T" && "$abs_pe" zeroshot --size 224 --out "$T/zs" "$abs_ex/test" >/dev/null 2>"$T/err2")
check default_model_beside_binary grep -q "default backbone .*/weights/" "$T/err2"
check default_model_zeroshot_scores test "$(wc -l <"$T/zs/scores.csv")" -eq 5
# a binary with no weights/ beside its folder, run elsewhere: the old clear error
mkdir -p "$T/bin/sub" && cp "$PATCHEAD" "$T/bin/sub/patchead"
(cd "$T" && expect_error default_model_absent 2 "needs --model" "$T/bin/sub/patchead" fit -o "$T/x.pead" "$abs_ex/train/good")
