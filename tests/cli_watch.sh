#!/usr/bin/env bash
# End-to-end tests of `patchead watch`: images present at start, an image written slowly
# in two halves (must not be scored half-written), an image renamed into the folder, a
# hidden temp file and a non-image (ignored), a corrupt image (recorded once as failed),
# SIGTERM (exit 0), and a restart that scores only what is new — also after a crash
# left a partial last line in scores.jsonl. Scores are compared with `patchead predict`.
# Real MobileNetV2 weights; SKIP without them. Everything runs under `timeout`.
set -u
. "$(dirname "$0")/serve_common.sh"

"$PATCHEAD" watch --help | grep -q "usage: patchead watch" && pass watch_help || fail watch_help "no usage"
"$PATCHEAD" watch --bank x.pead >/dev/null 2>&1; rc=$?
check watch_usage_exit_2 test "$rc" -eq 2
touch "$T/afile"
"$PATCHEAD" watch --bank x.pead --in "$T/afile" >/dev/null 2>"$T/err"; rc=$?
check watch_in_not_folder test "$rc" -eq 1 -a "$(wc -l < "$T/err")" -eq 1
check watch_in_not_folder_message grep -q "afile: not a folder" "$T/err"
"$PATCHEAD" watch --bank "$T/missing.pead" --in "$T" >/dev/null 2>"$T/err"; rc=$?
check watch_missing_bank test "$rc" -eq 1 -a "$(wc -l < "$T/err")" -eq 1

if [ ! -e "$MODEL" ]; then echo "SKIP cli_watch: $MODEL absent (make weights)"; exit 0; fi

EX=examples/tire
timeout 120 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 -o "$T/tire.pead" "$EX/train/good" 2>"$T/err" \
    || { fail watch_fit "$(cat "$T/err")"; exit 1; }
timeout 120 "$PATCHEAD" predict --quiet --no-maps --bank "$T/tire.pead" --out "$T/cli" "$EX/test" 2>/dev/null
cli_score() { grep "/$1," "$T/cli/scores.csv" | cut -d, -f2; }

IN=$T/in OUT=$T/out
mkdir -p "$IN"
cp "$EX/test/good/good_000.jpg" "$IN/"
start_watch() {
    timeout 300 "$PATCHEAD" watch --bank "$T/tire.pead" --in "$IN/" --out "$OUT" --settle 300 2>>"$T/watch.err" &
    BG_PID=$!
}
rows() { tail -n +2 "$OUT/scores.csv" 2>/dev/null | wc -l; }
wait_rows() { for _ in $(seq 600); do [ "$(rows)" -ge "$1" ] && return 0; sleep 0.05; done; return 1; }
score_of() { grep "/$1," "$OUT/scores.csv" | cut -d, -f2; }
same() { $PY -c "import sys; sys.exit(not (sys.argv[1] and sys.argv[2] and abs(float(sys.argv[1]) - float(sys.argv[2])) <= 1e-6))" "$1" "$2"; }

start_watch
check watch_scores_existing wait_rows 1
check watch_existing_score same "$(score_of good_000.jpg)" "$(cli_score good_000.jpg)"

# A slow writer: half the JPEG, a pause far longer than --settle, the rest, then close.
half=$(( $(stat -c %s "$EX/test/defect/hole_000.jpg") / 2 ))
{ head -c "$half" "$EX/test/defect/hole_000.jpg"; sleep 2; tail -c +"$((half + 1))" "$EX/test/defect/hole_000.jpg"; } > "$IN/hole_000.jpg"
check watch_slow_writer_scored wait_rows 2
check watch_slow_writer_whole_image same "$(score_of hole_000.jpg)" "$(cli_score hole_000.jpg)"

# Written under a hidden name, then renamed in (the usual atomic upload).
cp "$EX/test/defect/contamination_000.jpg" "$IN/.upload.jpg"
echo "notes" > "$IN/notes.txt"
sleep 0.5
mv "$IN/.upload.jpg" "$IN/contamination_000.jpg"
check watch_renamed_in wait_rows 3
check watch_renamed_score same "$(score_of contamination_000.jpg)" "$(cli_score contamination_000.jpg)"
printf 'not a jpeg at all' > "$IN/broken.jpg"
check watch_corrupt_recorded wait_rows 4
check watch_corrupt_empty_score test "$(grep '/broken.jpg,' "$OUT/scores.csv" | cut -d, -f2)" = ""
check watch_corrupt_error_json grep -q '"path": "[^"]*/broken.jpg", "error": ' "$OUT/scores.jsonl"
sleep 1
check watch_ignores_hidden_and_text test "$(rows)" -eq 4
check watch_maps_written test -s "$OUT/maps/hole_000.npy" -a -s "$OUT/heatmaps/hole_000.png" -a -s "$OUT/heatmaps/contamination_000.png"

stop_bg; rc=$?
check watch_sigterm_exit_0 test "$rc" -eq 0
# an uncalibrated bank has no drift check: no drift line (calibrated: tests/cli_serve_drift.sh)
check watch_uncalibrated_no_drift_line sh -c "! grep -q drift '$T/watch.err'"

# While stopped: one new image; a crash left half a row at the end of scores.jsonl.
cp "$EX/test/good/good_001.jpg" "$IN/"
printf '{"path": "%s/half' "$IN" >> "$OUT/scores.jsonl"
start_watch
check watch_restart_scores_new wait_rows 5
sleep 1.5
stop_bg; rc=$?
check watch_restart_exit_0 test "$rc" -eq 0
check watch_restart_no_double test "$(rows)" -eq 5
check watch_each_path_once test "$(tail -n +2 "$OUT/scores.csv" | cut -d, -f1 | sort | uniq -d | wc -l)" -eq 0
check watch_restart_new_score same "$(score_of good_001.jpg)" "$(cli_score good_001.jpg)"
# every complete scores.jsonl line is JSON; the crash's partial line stayed alone on its line
check watch_jsonl_lines $PY -c "
import json, sys
lines = open(sys.argv[1]).read().splitlines()
parsed = [json.loads(l) for l in lines if not l.startswith('{\"path\": \"' + sys.argv[2] + '/half')]
sys.exit(len(parsed) != 5 or len(lines) != 6)" "$OUT/scores.jsonl" "$IN"
check watch_stem_not_reused test ! -e "$OUT/heatmaps/good_000_2.png"

# --no-maps: rows only, no maps/ or heatmaps/ folders
timeout 300 "$PATCHEAD" watch --quiet --no-maps --bank "$T/tire.pead" --in "$IN" --out "$T/out2" --settle 100 &
BG_PID=$!
OUT=$T/out2
check watch_no_maps_rows wait_rows 5
stop_bg; rc=$?
check watch_no_maps_exit_0 test "$rc" -eq 0
check watch_no_maps_no_folders test ! -e "$T/out2/maps" -a ! -e "$T/out2/heatmaps"
check watch_no_maps_jsonl_no_map sh -c "! grep -q '\"map\"' '$T/out2/scores.jsonl'"
