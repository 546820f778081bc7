#!/usr/bin/env bash
# cli_serve_drift.sh — the drift check of the long-running commands on real data
# (docs/SERVE.md, "Drift"): `serve` answers a "drift" object per calibrated bank and exports
# patchead_drift_* gauges; `watch` logs one line when the check turns to warning and one when
# it returns to normal. Same split and bank as tests/cli_drift.sh (tire train/good by md5 of
# the name: 100 references, 72 calibration, 67 held-out; MobileNetV2, 224 px, --fpr 0.05),
# one bank fit shared by both parts. The stream: the 67 held-out images (exchangeable with the
# calibration: quiet), the 25 test/good images (another acquisition, they score higher: the
# check warns as they fill the window), then the 67 held-out images again (the alarm ends once
# a whole window of them has passed without a warning). --drift-window 25 so that the window
# holds only the current part of the stream, --drift-level 0.05 (the level predict uses; the
# defaults 200 / 0.01 are checked on a second server). SKIP without PATCHEAD_DATA, weights or
# curl. Everything runs under `timeout`.
set -u
. "$(dirname "$0")/serve_common.sh"
TIRE=${PATCHEAD_DATA:-}/mvtec3d_tire
if [ -z "${PATCHEAD_DATA:-}" ] || [ ! -d "$TIRE/train/good" ]; then
    echo "SKIP cli_serve_drift: PATCHEAD_DATA (with mvtec3d_tire) not set"
    exit 0
fi
# absolute: the split and the watch folder link to these files from $T (a relative
# PATCHEAD_DATA, as in the README's PATCHEAD_DATA=../shared/data, would leave them dangling)
TIRE=$(cd "$TIRE" && pwd)
if [ ! -e "$MODEL/model.safetensors" ]; then echo "SKIP cli_serve_drift: $MODEL absent (make weights)"; exit 0; fi
if ! command -v curl >/dev/null; then echo "SKIP cli_serve_drift: curl absent"; exit 0; fi

. "$(dirname "$0")/tire_split.sh"
tire_drift_split "$TIRE/train/good"
check drift_split test "$(ls "$T/ref" | wc -l) $(ls "$T/cal" | wc -l) $(ls "$T/held" | wc -l)" = "100 72 67"
timeout 300 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --calibrate "$T/cal" --fpr 0.05 \
    -o "$T/b.pead" "$T/ref" 2>"$T/err" || { fail drift_fit "$(cat "$T/err")"; exit 1; }
timeout 300 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots 2 -o "$T/u.pead" "$T/ref" 2>/dev/null \
    || { fail drift_fit_uncalibrated "fit failed"; exit 1; }
# the stream, in order: held-out, test/good, held-out again
ls "$T"/held/* > "$T/stream"
ls "$TIRE"/test/good/* >> "$T/stream"
ls "$T"/held/* >> "$T/stream"
N=$(wc -l < "$T/stream")
check drift_stream_length test "$N" -eq 159

# ---- serve ----------------------------------------------------------------------
start_server --bank "tire=$T/b.pead" --bank "plain=$T/u.pead" --drift-window 25 --drift-level 0.05 \
    || { fail drift_serve_start "$(cat "$T/serve.err")"; exit 1; }
pass drift_serve_start
check drift_serve_startup_line grep -q "drift check on 1 calibrated bank: the last 25 images judged normal vs the calibration, warning at p < 0.05" "$T/serve.err"
post() { # post BANK FILE OUT: the JSON answer of one image into OUT
    curl -s -m 60 -H 'Content-Type: image/jpeg' --data-binary @"$2" "$URL/v1/banks/$1/predict" > "$3"
}
metric() { curl -s -m 30 "$URL/metrics" | sed -n "s/^$1{bank=\"$2\"} //p"; }
: > "$T/answers"
k=0
while read -r f; do
    k=$((k + 1))
    post tire "$f" "$T/a.json"
    $PY -c "import json,sys; j=json.load(open(sys.argv[1])); d=j['drift']; print(j['is_anomalous'], d['judged_normal'], d['tested'], d['p_value'], d['warning'], d['statistic'], d['level'], d['window'], d['calibration'], d['alarm'])" "$T/a.json" >> "$T/answers"
    if [ $k -eq 67 ]; then cp "$T/a.json" "$T/held.json"; metric patchead_drift_p_value tire > "$T/m67.p"; metric patchead_drift_warning tire > "$T/m67.w"; fi
    if [ $k -eq 92 ]; then cp "$T/a.json" "$T/good.json"; curl -s -m 30 "$URL/metrics" > "$T/m92"; fi
done < "$T/stream"
check drift_serve_all_answered test "$(wc -l < "$T/answers")" -eq "$N"
# every answer's drift object: judged_normal counts the images not flagged (until the window
# is full), tested from 10 on, the p-value and warning agree with D, n, m and the level; the
# alarm runs from a warning until 25 judged-normal images in a row without one
check drift_serve_fields_consistent $PY -c "
import math, sys
normal = alarm = quiet = 0
for line in open(sys.argv[1]):
    anom, jn, tested, p, warn, d, level, window, n, al = line.split()
    normal += anom == 'False'
    jn, p, d, n = int(jn), float(p), float(d), int(n)
    assert jn == min(normal, 25), (line, normal)
    assert (tested == 'True') == (jn >= 10), line
    assert level == '0.05' and window == '25' and 0 < n <= 72, line
    want = math.exp(-2 * d * d * n * jn / (n + jn)) if jn >= 10 else 1.0
    assert abs(p - min(want, 1.0)) < 1e-9, (line, want)
    assert (warn == 'True') == (jn >= 10 and p < 0.05), line
    if warn == 'True': alarm, quiet = 1, 0
    elif alarm and anom == 'False':
        quiet += 1
        if quiet >= 25: alarm = 0
    assert (al == 'True') == bool(alarm), line
" "$T/answers"
check drift_serve_held_quiet test "$(json "$T/held.json" "(j['drift']['tested'], j['drift']['warning'])")" = "(True, False)"
check drift_serve_held_no_warning_before_good test "$(head -67 "$T/answers" | awk '$5 == "True"' | wc -l)" -eq 0
check drift_serve_gauge_matches_answer $PY -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(abs(float(open(sys.argv[2]).read()) - j['drift']['p_value']) > 1e-8 * max(1, j['drift']['p_value']))" "$T/held.json" "$T/m67.p"
check drift_serve_gauge_quiet test "$(cat "$T/m67.w")" = 0
check drift_serve_test_good_warns test "$(json "$T/good.json" "j['drift']['warning']")" = True
check drift_serve_gauge_warns grep -q '^patchead_drift_warning{bank="tire"} 1$' "$T/m92"
check drift_serve_gauges_all $PY -c "
import json, sys
j = json.load(open(sys.argv[1]))['drift']
m = {}
for l in open(sys.argv[2]):
    if l.startswith('patchead_drift_') and 'bank=\"tire\"' in l:
        m[l.split('{')[0]] = float(l.split()[-1])
want = {'patchead_drift_p_value': j['p_value'], 'patchead_drift_statistic': j['statistic'],
        'patchead_drift_warning': 1.0, 'patchead_drift_judged_normal': j['judged_normal'],
        'patchead_drift_level': 0.05}
sys.exit(any(abs(m.get(k, -1) - v) > 1e-8 * max(1, abs(v)) for k, v in want.items()))" "$T/good.json" "$T/m92"
check drift_serve_gauge_types grep -q '^# TYPE patchead_drift_p_value gauge$' "$T/m92"
check drift_serve_uncalibrated_no_gauge test "$(grep '^patchead_drift_' "$T/m92" | grep -c 'bank="plain"')" -eq 0
post plain "$T/held/$(ls "$T/held" | head -1)" "$T/plain.json"
check drift_serve_uncalibrated_no_field test "$(json "$T/plain.json" "('drift' in j, j['score'] > 0)")" = "(False, True)"
check drift_serve_back_to_normal test "$(tail -1 "$T/answers" | cut -d' ' -f5,10)" = "False False"
check drift_serve_warning_line_once test "$(grep -c 'warning: drift: bank tire' "$T/serve.err")" -eq 1
check drift_serve_normal_line_once test "$(grep -c 'drift: bank tire back to normal' "$T/serve.err")" -eq 1
stop_bg; rc=$?
check drift_serve_exit_0 test "$rc" -eq 0
# defaults: window 200, level 0.01
start_server --bank "tire=$T/b.pead" || { fail drift_serve_default_start "$(cat "$T/serve.err")"; exit 1; }
post tire "$T/held/$(ls "$T/held" | head -1)" "$T/d.json"
check drift_serve_defaults test "$(json "$T/d.json" "(j['drift']['window'], j['drift']['level'], j['drift']['judged_normal'] == (not j['is_anomalous']))")" = "(200, 0.01, True)"
stop_bg >/dev/null

# ---- watch ----------------------------------------------------------------------
# the same stream as files waiting at start (scored in name order)
mkdir -p "$T/in"
k=0
while read -r f; do k=$((k + 1)); ln -s "$f" "$T/in/$(printf %03d "$k")_$(basename "$f")"; done < "$T/stream"
timeout 300 "$PATCHEAD" watch --no-maps --bank "$T/b.pead" --in "$T/in" --out "$T/wout" --settle 100 \
    --drift-window 25 --drift-level 0.05 2>"$T/watch.err" &
BG_PID=$!
rows() { tail -n +2 "$T/wout/scores.csv" 2>/dev/null | wc -l; }
for _ in $(seq 1200); do [ "$(rows)" -ge "$N" ] && break; sleep 0.1; done
check drift_watch_scored_all test "$(rows)" -eq "$N"
stop_bg; rc=$?
check drift_watch_exit_0 test "$rc" -eq 0
check drift_watch_startup_line grep -q "drift check: the last 25 images judged normal (this run)" "$T/watch.err"
check drift_watch_warning_once test "$(grep -c 'warning: drift: the last 25 images judged normal score higher' "$T/watch.err")" -eq 1
check drift_watch_normal_once test "$(grep -c 'drift: back to normal' "$T/watch.err")" -eq 1
# the alarm starts during the test/good images (files 068..092) and ends after them, at the
# same images as serve's on the same stream
wline=$(grep -n 'warning: drift' "$T/watch.err" | head -1 | cut -d: -f1)
nline=$(grep -n 'back to normal' "$T/watch.err" | head -1 | cut -d: -f1)
at() { head -n "${1:-0}" "$T/watch.err" | grep -o '/[0-9][0-9][0-9]_' | tail -1 | tr -dc 0-9; }
wfile=$((10#$(at "$wline")0 / 10)) nfile=$((10#$(at "$nline")0 / 10))
check drift_watch_warning_during_test_good test "$wfile" -ge 68 -a "$wfile" -le 92
check drift_watch_normal_after_test_good test "$nfile" -gt 92
check drift_watch_same_as_serve test "$wfile $nfile" = "$(awk '$10 == "True" && !a {a = NR} a && $10 == "False" {print a, NR; exit}' "$T/answers")"
