#!/usr/bin/env bash
# Browser test of the page served by `patchead serve`: headless Chromium (Debian package
# `chromium`) driven over the DevTools protocol by tests/serve_page_test.py chooses the
# four tire test images in the page's file input, waits for the heatmaps, checks the
# scores the page shows against the API's, moves the threshold slider between the good
# and the defect scores and checks the OK/NG re-labelling (without new requests).
# The screenshot is kept in $BUILD/test-output/serve_page.png.
# Size 320, where the tire defects score above the good images (224 is too coarse).
# SKIP without weights, curl or Chromium. Everything runs under `timeout`.
set -u
. "$(dirname "$0")/serve_common.sh"
OUT=$(dirname "$PATCHEAD")/test-output

if [ ! -e "$MODEL" ]; then echo "SKIP cli_serve_page: $MODEL absent (make weights)"; exit 0; fi
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ] || ! command -v curl >/dev/null; then
    echo "SKIP cli_serve_page: chromium or curl absent (scripts/install-deps.sh)"; exit 0
fi
mkdir -p "$OUT"
EX=examples/tire
# Under the sanitizer build, the server's exit-time leak scan is left to cli_serve.sh
# (sigterm_no_sanitizer_report): once, on a loaded machine, LeakSanitizer's scan at exit
# spun after SIGTERM here. ASan/UBSan's checks while serving stay on; other builds ignore it.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
timeout 120 "$PATCHEAD" fit --quiet --model "$MODEL" --size 320 -o "$T/tire.pead" "$EX/train/good" 2>"$T/err" \
    || { echo "FAIL page_fit: $(cat "$T/err")"; exit 1; }
start_server --quiet --bank "tire=$T/tire.pead" || { echo "FAIL page_server_start: $(cat "$T/serve.err")"; exit 1; }

# The API's scores of the same files, and a threshold between the good and defect ones.
for f in "$EX"/test/*/*.jpg; do
    curl -s -m 60 -H 'Content-Type: image/jpeg' --data-binary @"$f" "$URL/v1/banks/tire/predict" \
        | $PY -c "import json,sys; print(sys.argv[1], json.load(sys.stdin)['score'])" "$(basename "$f")"
done > "$T/api_scores"
thr=$($PY -c "
import sys
s = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[1])}
good = max(v for k, v in s.items() if k.startswith('good'))
bad = min(v for k, v in s.items() if not k.startswith('good'))
print((good + bad) / 2 if bad > good else good)" "$T/api_scores")

timeout 120 $PY tests/serve_page_test.py "$CHROMIUM" "$URL/" "$OUT/serve_page.png" "$thr" \
    "$EX"/test/defect/*.jpg "$EX"/test/good/*.jpg > "$T/page.log" 2>&1
grep -E '^(PASS|FAIL|SKIP) ' "$T/page.log"
grep -qE '^(PASS|FAIL) ' "$T/page.log" || echo "FAIL page_driver: $(tail -3 "$T/page.log")"
# the page shows the API's scores, and with the threshold in between the defects are NG
$PY - "$T/api_scores" "$T/page.log" <<'PYEOF'
import json, sys
api = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[1])}
line = [l for l in open(sys.argv[2]) if l.startswith("RESULT ")]
if not line:
    print("FAIL page_matches_api: no RESULT from the page driver"); sys.exit()
res = json.loads(line[0][7:])
cards = res["cards"]
ok = len(cards) == len(api) and all(abs(c["score"] - api[c["name"]]) <= 1e-6 for c in cards)
print("PASS page_matches_api" if ok else f"FAIL page_matches_api: page {cards} api {api}")
verdict = dict(zip([c["name"] for c in cards], res["badges_after_slider"]))
want = {k: ("OK" if k.startswith("good") else "NG") for k in api}
print("PASS page_defects_ng_goods_ok" if verdict == want else f"FAIL page_defects_ng_goods_ok: {verdict}")
PYEOF
stop_bg; rc=$?
[ "$rc" -eq 0 ] && echo "PASS page_server_stops" || echo "FAIL page_server_stops: exit $rc"
echo "# screenshot: $OUT/serve_page.png"
