#!/usr/bin/env bash
# End-to-end tests of `patchead serve` on 127.0.0.1 (a free port picked by the server):
# every endpoint and error code with curl, the malformed-request suite over raw sockets
# (tests/serve_malformed.py), the busy answer (503 + Retry-After), /metrics against what
# was sent, and SIGTERM with requests in flight (all answered, exit 0, port closed).
# Real MobileNetV2 weights + the bundled tire images; SKIP without them or without curl.
# Everything runs under `timeout`; the server is killed on any exit.
set -u
. "$(dirname "$0")/serve_common.sh"

"$PATCHEAD" serve --help | grep -q "usage: patchead serve" && pass serve_help || fail serve_help "no usage"
"$PATCHEAD" serve >/dev/null 2>"$T/err"; rc=$?
check serve_usage_exit_2 test "$rc" -eq 2
"$PATCHEAD" serve --bank "$T/missing.pead" >/dev/null 2>"$T/err"; rc=$?
check serve_missing_bank_exit_1 test "$rc" -eq 1 -a "$(wc -l < "$T/err")" -eq 1
check serve_missing_bank_message grep -q "missing.pead" "$T/err"
"$PATCHEAD" serve --bank "a b=$T/missing.pead" >/dev/null 2>"$T/err"; rc=$?
check serve_bad_bank_name test "$rc" -ne 0 -a "$(wc -l < "$T/err")" -eq 1
"$PATCHEAD" serve --bank x.pead --host localhost >/dev/null 2>"$T/err"; rc=$?
check serve_bad_host_exit_2 test "$rc" -eq 2

if [ ! -e "$MODEL" ]; then echo "SKIP cli_serve: $MODEL absent (make weights)"; exit 0; fi
if ! command -v curl >/dev/null; then echo "SKIP cli_serve: curl absent (scripts/install-deps.sh)"; exit 0; fi

EX=examples/tire
GOOD=$EX/test/good/good_000.jpg
HOLE=$EX/test/defect/hole_000.jpg
timeout 120 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 -o "$T/tire.pead" "$EX/train/good" 2>"$T/err" \
    || { fail serve_fit "$(cat "$T/err")"; exit 1; }
# the CLI's own scores, to compare the service with
timeout 120 "$PATCHEAD" predict --quiet --no-maps --bank "$T/tire.pead" --out "$T/cli" "$HOLE" "$GOOD" 2>"$T/err"
cli_hole=$(grep hole_000 "$T/cli/scores.csv" | cut -d, -f2)

IDLE=1
serve() { start_server --bank "tire=$T/tire.pead" --bank "second=$T/tire.pead" --timeout $IDLE --max-body 1 "$@"; }
# req NAME METHOD PATH [curl args...]: body in $T/NAME.body, headers in $T/NAME.head, code echoed
req() {
    local name=$1 method=$2 path=$3; shift 3
    curl -s -m 60 -X "$method" -D "$T/$name.head" -o "$T/$name.body" -w '%{http_code}' "$@" "$URL$path"
}

serve || { fail serve_start "$(cat "$T/serve.err")"; exit 1; }
pass serve_start
check serve_binds_loopback grep -q '^listening http://127.0.0.1:' "$T/out"

# --- GET endpoints -------------------------------------------------------------
check healthz_200 test "$(req h GET /healthz)" = 200
check healthz_json test "$(json "$T/h.body" "j['status']")" = ok
check banks_200 test "$(req b GET /v1/banks)" = 200
check banks_names test "$(json "$T/b.body" "','.join(b['name'] for b in j['banks'])")" = tire,second
check banks_fields test "$(json "$T/b.body" "(j['banks'][0]['references'], j['banks'][0]['size'], j['banks'][0]['backbone']['name'], len(j['banks'][0]['hash']), j['banks'][0]['threshold'] > 0)")" = "(3, 224, 'mobilenet_v2', 16, True)"
check page_200 test "$(req p GET /)" = 200
check page_html grep -q '<title>patchead inspection</title>' "$T/p.body"
check page_content_type grep -qi '^content-type: text/html' "$T/p.head"

# --- predict -------------------------------------------------------------------
check predict_200 test "$(req hole POST /v1/banks/tire/predict -H 'Content-Type: image/jpeg' --data-binary @"$HOLE")" = 200
check predict_same_score_as_cli $PY -c "import json,sys; s=json.load(open(sys.argv[1]))['score']; c=float(sys.argv[2]); sys.exit(abs(s-c) > 1e-6*max(1,abs(c)))" "$T/hole.body" "$cli_hole"
check predict_fields test "$(json "$T/hole.body" "(j['bank'], j['threshold_source'], j['image'], j['backbone']['name'], len(j['bank_hash']), sorted(j['timings_ms']))")" = "('tire', 'bank', {'width': 300, 'height': 400}, 'mobilenet_v2', 16, ['decode', 'features', 'queue', 'scoring', 'total'])"
check predict_decision test "$(json "$T/hole.body" "j['is_anomalous'] == (j['score'] > j['threshold'])")" = True
check predict_threshold_override test "$(req t0 POST '/v1/banks/tire/predict?threshold=0' -H 'Content-Type: image/jpeg' --data-binary @"$GOOD")" = 200
check predict_threshold_override_json test "$(json "$T/t0.body" "(j['threshold'], j['is_anomalous'], j['threshold_source'])")" = "(0, True, 'request')"
req t1 POST '/v1/banks/tire/predict?threshold=1e9' -H 'Content-Type: image/jpeg' --data-binary @"$GOOD" >/dev/null
check predict_threshold_high test "$(json "$T/t1.body" "j['is_anomalous']")" = False
check predict_octet_stream test "$(req o POST /v1/banks/second/predict -H 'Content-Type: application/octet-stream' --data-binary @"$GOOD")" = 200
check predict_multipart test "$(req m POST /v1/banks/tire/predict -F "image=@$HOLE;type=image/jpeg")" = 200
check predict_multipart_two_files test "$(req m2 POST /v1/banks/tire/predict -F note=x -F "image=@$HOLE;type=image/jpeg" -F "second=@$GOOD;type=image/jpeg")" = 200
check predict_multipart_first_file test "$(json "$T/m2.body" "j['score']")" = "$(json "$T/hole.body" "j['score']")"
check predict_multipart_same_score test "$(json "$T/m.body" "j['score']")" = "$(json "$T/hole.body" "j['score']")"
check predict_heatmap_png test "$(req hp POST '/v1/banks/tire/predict?heatmap=png' -H 'Content-Type: image/jpeg' --data-binary @"$HOLE")" = 200
check heatmap_content_type grep -qi '^content-type: image/png' "$T/hp.head"
# the overlay is the image's size plus the colour bar (4 px gap + 8 px bar at 300 px)
check heatmap_png_size test "$($PY -c "import struct,sys; d=open(sys.argv[1],'rb').read(); print(d[:8]==b'\x89PNG\r\n\x1a\n', struct.unpack('>II', d[16:24]))" "$T/hp.body")" = "True (312, 400)"
hdr_score=$(tr -d '\r' < "$T/hp.head" | sed -n 's/^[Xx]-[Pp]atchead-[Ss]core: //p')
check heatmap_score_header $PY -c "import sys; sys.exit(abs(float(sys.argv[1]) - float(sys.argv[2])) > 1e-6)" "$hdr_score" "$(json "$T/hole.body" "j['score']")"
tr -d '\r' < "$T/hp.head" | sed -n 's/^[Xx]-[Pp]atchead-[Rr]esult: //p' > "$T/hp.json"
check heatmap_result_header test "$(json "$T/hp.json" "sorted(j['timings_ms'])")" = "['decode', 'features', 'heatmap', 'queue', 'scoring', 'total']"
# a PNG body (the heatmap just received) is scored too
check predict_png_body test "$(req pb POST /v1/banks/tire/predict -H 'Content-Type: image/png' --data-binary @"$T/hp.body")" = 200
check predict_png_body_size test "$(json "$T/pb.body" "j['image']['width']")" = 312

# --- error answers (each a JSON {"error": ...}) ----------------------------------
is_error() { test "$(json "$T/$1.body" "j['status'] == $2 and len(j['error']) > 0")" = True; }
check unknown_bank_404 test "$(req e1 POST /v1/banks/nope/predict -H 'Content-Type: image/jpeg' --data-binary @"$GOOD")" = 404
check unknown_bank_404_json is_error e1 404
check get_on_predict_405 test "$(req e2 GET /v1/banks/tire/predict)" = 405
check get_on_predict_allow grep -qi '^allow: POST' "$T/e2.head"
check put_healthz_405 test "$(req e3 PUT /healthz)" = 405
check unknown_path_404 test "$(req e4 GET /nothing/here)" = 404
check unknown_path_404_json is_error e4 404
printf 'this is not an image' > "$T/text.jpg"
check not_an_image_400 test "$(req e5 POST /v1/banks/tire/predict -H 'Content-Type: image/jpeg' --data-binary @"$T/text.jpg")" = 400
check not_an_image_message grep -q 'not a PNG, JPEG or BMP' "$T/e5.body"
printf 'GIF89a\001\000\001\000\000\000\000;' > "$T/x.gif"
check gif_415 test "$(req e6 POST /v1/banks/tire/predict -H 'Content-Type: image/gif' --data-binary @"$T/x.gif")" = 415
check text_plain_415 test "$(req e7 POST /v1/banks/tire/predict -H 'Content-Type: text/plain' --data-binary @"$GOOD")" = 415
check bad_threshold_400 test "$(req e8 POST '/v1/banks/tire/predict?threshold=abc' -H 'Content-Type: image/jpeg' --data-binary @"$GOOD")" = 400
check bad_threshold_nan_400 test "$(req e9 POST '/v1/banks/tire/predict?threshold=nan' -H 'Content-Type: image/jpeg' --data-binary @"$GOOD")" = 400
check bad_heatmap_400 test "$(req e10 POST '/v1/banks/tire/predict?heatmap=gif' -H 'Content-Type: image/jpeg' --data-binary @"$GOOD")" = 400
check multipart_without_file_400 test "$(req e11 POST /v1/banks/tire/predict -F 'note=hello')" = 400
head -c $((1024 * 1024 + 1)) /dev/zero > "$T/big.bin"
check body_over_limit_413 test "$(req e12 POST /v1/banks/tire/predict -H 'Content-Type: image/jpeg' --data-binary @"$T/big.bin")" = 413
check body_over_limit_413_json is_error e12 413
# chunked (no Content-Length) over the limit: cut by closing the connection (curl then
# reports 000, or 100 when the server had said "100 Continue" first)
code=$(curl -s -m 30 -o /dev/null -w '%{http_code}' -H 'Transfer-Encoding: chunked' -H 'Content-Type: image/jpeg' \
       --data-binary @"$T/big.bin" "$URL/v1/banks/tire/predict")
check chunked_over_limit_cut test "$code" = 000 -o "$code" = 100 -o "$code" = 413
check healthy_after_errors test "$(req h2 GET /healthz)" = 200

# --- raw-socket malformed requests (truncated, 0 / 1 GB lengths, content types,
#     invalid UTF-8 and '..' in names, slowloris) -----------------------------------
timeout 120 $PY tests/serve_malformed.py "$PORT" tire "$GOOD" "$IDLE"

# --- busy: --queue limit answered with 503 + Retry-After ----------------------------
stop_bg
# A slow job to keep the worker busy whatever the machine's speed: a 4000x3000 PNG
# (black, 35 kB compressed) answered with its heatmap (map, overlay and PNG at 12 Mpx).
$PY -c "
import struct, sys, zlib
w, h = 4000, 3000
def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
raw = b''.join(b'\\0' + bytes(3 * w) for _ in range(h))
open(sys.argv[1], 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
    + chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b''))" "$T/big.png"
serve --queue 1 --workers 1 || { fail serve_restart "$(cat "$T/serve.err")"; exit 1; }
pids=()
curl -s -m 120 -D "$T/q1.head" -o "$T/q1.body" -w '%{http_code}\n' -H 'Content-Type: image/png' \
    --data-binary @"$T/big.png" "$URL/v1/banks/tire/predict?heatmap=png" > "$T/q1.code" &
pids+=($!)
# the others are sent once the big job holds the only worker (not after a fixed pause)
for _ in $(seq 300); do
    curl -s -m 5 "$URL/metrics" > "$T/m0"
    [ "$(sed -n 's/^patchead_predict_running //p' "$T/m0")" = 1 ] && break; sleep 0.05
done
for i in 2 3 4 5 6; do
    curl -s -m 60 -D "$T/q$i.head" -o "$T/q$i.body" -w '%{http_code}\n' -H 'Content-Type: image/jpeg' \
        --data-binary @"$HOLE" "$URL/v1/banks/tire/predict" > "$T/q$i.code" &
    pids+=($!)
done
wait "${pids[@]}"
n200=$(cat "$T"/q*.code | grep -c '^200$'); n503=$(cat "$T"/q*.code | grep -c '^503$')
check busy_only_200_or_503 test "$((n200 + n503))" -eq 6
check busy_some_503 test "$n503" -ge 1 -a "$n200" -ge 1
check busy_retry_after sh -c "grep -qi '^retry-after: 1' $(grep -l '^503$' "$T"/q*.code | head -1 | sed 's/code$/head/')"
# metrics agree with what was sent to this server instance
req mt GET /metrics >/dev/null
# counters grew by what was sent since the last poll ($T/m0, answered and so counted once
# the predicts started; the big job was still in flight then, so not yet counted)
metric() { sed -n "s/^$2 //p" "$1" | head -1; }
ok200_0=$(metric "$T/m0" 'patchead_http_requests_total{code="200"}')
hist_0=$(metric "$T/m0" 'patchead_http_request_duration_seconds_count')
check metrics_200_count test "$(metric "$T/mt.body" 'patchead_http_requests_total{code="200"}')" = "$((ok200_0 + 1 + n200))"
check metrics_503_count grep -q "^patchead_http_requests_total{code=\"503\"} $n503\$" "$T/mt.body"
check metrics_images_scored grep -q "^patchead_images_scored_total{bank=\"tire\"} $n200\$" "$T/mt.body"
check metrics_histogram_count test "$(metric "$T/mt.body" patchead_http_request_duration_seconds_count)" = "$((hist_0 + 1 + n200 + n503))"
check metrics_inflight grep -q '^patchead_requests_in_flight 1$' "$T/mt.body" # this request
check metrics_rss grep -qE '^patchead_process_resident_memory_bytes [1-9][0-9]+$' "$T/mt.body"

# --- SIGTERM with requests in flight: all answered, exit 0, port closed ---------------
stop_bg
serve --queue 8 || { fail serve_restart2 "$(cat "$T/serve.err")"; exit 1; }
# Clients that give up while queued cost no inference: a slow job (the 12-Mpx PNG with
# its heatmap) holds the worker while two clients time out behind it.
curl -s -m 120 -o /dev/null -w '%{http_code}' -H 'Content-Type: image/png' --data-binary @"$T/big.png" \
    "$URL/v1/banks/tire/predict?heatmap=png" > "$T/big.code" &
big=$!
# the two short clients are sent only once a worker is busy with the big job (its body
# can take a while to arrive on a loaded machine)
for _ in $(seq 300); do
    [ "$(curl -s -m 5 "$URL/metrics" | sed -n 's/^patchead_predict_running //p')" = 1 ] && break; sleep 0.05
done
# Two clients queue behind it (seen in /metrics: depth 2 while the big job runs), then give
# up (killed: their sockets close). No client-side timeout decides what was queued.
short=()
for i in 1 2; do
    curl -s -m 120 -o /dev/null -H 'Content-Type: image/jpeg' --data-binary @"$GOOD" "$URL/v1/banks/second/predict" &
    short+=($!)
done
queued=
for _ in $(seq 600); do
    curl -s -m 5 "$URL/metrics" > "$T/m1"
    if grep -q '^patchead_predict_queue_depth 2$' "$T/m1" && grep -q '^patchead_predict_running 1$' "$T/m1"; then
        queued=1; break
    fi
    sleep 0.05
done
kill "${short[@]}" 2>/dev/null; wait "${short[@]}" 2>/dev/null
check abandoned_both_queued_behind_big test -n "$queued"
wait "$big"
check abandoned_big_image_200 test "$(cat "$T/big.code")" = 200
for _ in $(seq 100); do
    [ "$(curl -s -m 5 "$URL/metrics" | sed -n 's/^patchead_predict_admitted //p')" = 0 ] && break; sleep 0.1
done
curl -s -m 5 "$URL/metrics" > "$T/m2"
check abandoned_counted grep -q '^patchead_predict_abandoned_total 2$' "$T/m2"
grep -q '^patchead_predict_abandoned_total 2$' "$T/m2" \
    || grep -E '^patchead_(predict|images_scored)' "$T/m2" | sed 's/^/  metrics then: /' 
check abandoned_not_scored grep -q '^patchead_images_scored_total{bank="second"} 0$' "$T/m2"

pids=()
curl -s -m 120 -o "$T/s1.body" -w '%{http_code}\n' -H 'Content-Type: image/png' \
    --data-binary @"$T/big.png" "$URL/v1/banks/tire/predict" > "$T/s1.code" &
pids+=($!)
for i in 2 3; do
    curl -s -m 60 -o "$T/s$i.body" -w '%{http_code}\n' -H 'Content-Type: image/jpeg' \
        --data-binary @"$HOLE" "$URL/v1/banks/tire/predict" > "$T/s$i.code" &
    pids+=($!)
done
# wait until the server holds all three, then stop it
for _ in $(seq 100); do
    [ "$(curl -s -m 5 "$URL/metrics" | sed -n 's/^patchead_predict_admitted //p')" = 3 ] && break; sleep 0.05
done
stop_bg; rc=$?
wait "${pids[@]}"
check sigterm_exit_0 test "$rc" -eq 0
check sigterm_inflight_answered test "$(cat "$T"/s*.code | tr '\n' ' ')" = "200 200 200 "
check sigterm_inflight_scores test "$(json "$T/s3.body" "j['score'] > 0")" = True
check sigterm_port_closed test "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$URL/healthz")" = 000
check sigterm_logged grep -q 'draining' "$T/serve.err"
check sigterm_no_sanitizer_report sh -c "! grep -q 'Sanitizer' '$T/serve.err'"
