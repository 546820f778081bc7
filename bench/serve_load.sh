#!/usr/bin/env bash
# bench/serve_load.sh [BUILD] — load test of `patchead serve` on 127.0.0.1 (not part of CI):
#   1. the CLI's own per-image time (patchead predict over COPIES copies of one tire image,
#      same backbone and size) — the baseline for the serving overhead;
#   1b. COPIES sequential requests: curl total minus the answer's decode+features+scoring
#      (the HTTP + queue + JSON overhead per request, robust to a busy machine);
#   2. wrk against POST /v1/banks/tire/predict with 1, 4 and 16 connections for DURATION s
#      each: requests/s, p50/p90/p99 latency, non-200 answers, socket errors, and the
#      server's RSS before and after;
#   3. a soak at a small size (SOAK_SIZE) until at least SOAK_REQUESTS requests (bounded by
#      SOAK_SECONDS), RSS before / after: memory must not grow with the request count.
# Environment: SIZE (224), DURATION (30), CONNS ("1 4 16"), WORKERS (1), COPIES (20),
# SOAK_SIZE (64), SOAK_REQUESTS (5000), SOAK_SECONDS (240). Needs wrk (Debian package).
# Prints the machine, the load average, and one table row per run.
set -eu
BUILD=${1:-build}
P="$BUILD/patchead"
SIZE=${SIZE:-224}
DURATION=${DURATION:-30}
CONNS=${CONNS:-1 4 16}
WORKERS=${WORKERS:-1}
COPIES=${COPIES:-20}
SOAK_SIZE=${SOAK_SIZE:-64}
SOAK_REQUESTS=${SOAK_REQUESTS:-5000}
SOAK_SECONDS=${SOAK_SECONDS:-240}
MODEL=weights/mobilenet_v2
IMAGE=examples/tire/test/defect/hole_000.jpg
command -v wrk >/dev/null || { echo "serve_load: wrk is not installed (apt-get install wrk)"; exit 1; }
[ -e "$MODEL" ] || { echo "serve_load: $MODEL absent (make weights)"; exit 1; }
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ]; then export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000; fi
T=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null; rm -rf "$T"' EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== OpenBLAS kernel: $("$P" bench --sgemm --threads 1 2>/dev/null | grep -o 'core [^ ,)]*' | head -1 || true)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
server_pid() { pgrep -P "$SERVER" -x patchead || echo "$SERVER"; } # timeout's child
start() { # bank-file
    timeout 3600 "$P" serve --quiet --bank "tire=$1" --port 0 --workers "$WORKERS" >"$T/out" 2>"$T/err" &
    SERVER=$!
    for _ in $(seq 600); do grep -q '^listening' "$T/out" 2>/dev/null && break; sleep 0.1; done
    PORT=$(sed -n 's/^listening http:\/\/127.0.0.1:\([0-9]*\)\/$/\1/p' "$T/out")
    [ -n "$PORT" ] || { cat "$T/err"; exit 1; }
    # warm up (first-call allocations, page cache) before RSS "start" is read
    for _ in 1 2 3; do curl -s -o /dev/null -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE" \
        "http://127.0.0.1:$PORT/v1/banks/tire/predict"; done
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" || echo "server exit status $?"; SERVER=; }
# Between runs: wrk's end leaves requests in flight; their jobs are dropped (client gone)
# or finished. Wait for an idle server so a run does not start with a full queue.
wait_idle() {
    for _ in $(seq 600); do
        [ "$(curl -s -m 5 "http://127.0.0.1:$PORT/metrics" | sed -n 's/^patchead_predict_admitted //p')" = 0 ] && return
        sleep 0.1
    done
}

"$P" fit --quiet --model "$MODEL" --size "$SIZE" -o "$T/tire.pead" examples/tire/train/good
mkdir -p "$T/copies"
for i in $(seq "$COPIES"); do ln -s "$PWD/$IMAGE" "$T/copies/img_$i.jpg"; done
cli=$("$P" predict --no-maps --bank "$T/tire.pead" --out "$T/cli" "$T/copies" 2>&1 | sed -n 's/.*(\([0-9.]*\) ms\/image).*/\1/p')
echo "== CLI (patchead predict, ${COPIES} images, size $SIZE, mobilenet_v2): $cli ms/image (decode + features + scoring)"

# Serving overhead, measured in one window (the machine may be shared): N sequential
# requests, each one's curl total time minus the service's own decode + features + scoring
# (from the answer's timings_ms), and the CLI's ms/image right before.
start "$T/tire.pead"
: > "$T/seq"
for i in $(seq "$COPIES"); do
    curl -s -o "$T/one.json" -w '%{time_total}\n' -H 'Content-Type: image/jpeg' --data-binary @"$IMAGE" \
        "http://127.0.0.1:$PORT/v1/banks/tire/predict" > "$T/t"
    /usr/bin/python3 -c "
import json, sys
j = json.load(open(sys.argv[1])); t = j['timings_ms']; total = float(open(sys.argv[2]).read()) * 1000
print(total, t['decode'] + t['features'] + t['scoring'], total - t['decode'] - t['features'] - t['scoring'])" \
        "$T/one.json" "$T/t" >> "$T/seq"
done
stop
overhead=$(sort -g -k3 "$T/seq" | awk '{ a[NR] = $0 } END { split(a[int((NR + 1) / 2)], m, " "); printf "client %.1f ms, service compute %.1f ms, overhead %.1f ms", m[1], m[2], m[3] }')
echo "== sequential requests (median of $COPIES by overhead): $overhead"

echo
echo "| connections | requests | req/s | p50 ms | p90 ms | p99 ms | non-200 | socket errors | RSS start MiB | RSS end MiB | load avg |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
start "$T/tire.pead"
SPID=$(server_pid)
for c in $CONNS; do
    wait_idle
    r0=$(rss_kib "$SPID")
    t=$(( c < 2 ? c : 2 ))
    PE_IMAGE=$IMAGE PE_TYPE=image/jpeg wrk -t "$t" -c "$c" -d "${DURATION}s" --timeout 30s \
        -s bench/serve_post.lua "http://127.0.0.1:$PORT/v1/banks/tire/predict" > "$T/wrk_$c" 2>&1 || true
    r1=$(rss_kib "$SPID")
    line=$(grep '^RESULT' "$T/wrk_$c" || echo "RESULT failed")
    get() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    echo "| $c | $(get requests) | $(get req_s) | $(get p50_ms) | $(get p90_ms) | $(get p99_ms) | $(get non200) | $(get socket_errors) | $((r0 / 1024)) | $((r1 / 1024)) | $(cut -d' ' -f1 /proc/loadavg) |"
    [ "$c" = 1 ] && p50_1=$(get p50_ms)
done
wait_idle
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^patchead_(http_requests_total|images_scored_total|predict_abandoned_total)' > "$T/metrics"
stop
echo
echo "p50 at 1 connection ${p50_1:-?} ms vs CLI ${cli} ms/image: $(awk -v a="${p50_1:-0}" -v b="$cli" 'BEGIN { printf "%+.1f", a - b }') ms (load-sensitive; the sequential overhead above is measured per request)"
echo "server counters:"; sed 's/^/  /' "$T/metrics"

# Soak: many requests at a small size; RSS must not grow with the count.
"$P" fit --quiet --model "$MODEL" --size "$SOAK_SIZE" -o "$T/soak.pead" examples/tire/train/good
start "$T/soak.pead"
SPID=$(server_pid)
r0=$(rss_kib "$SPID")
total=0 rounds=0 t_start=$(date +%s)
while [ "$total" -lt "$SOAK_REQUESTS" ] && [ $(( $(date +%s) - t_start )) -lt "$SOAK_SECONDS" ]; do
    wait_idle
    PE_IMAGE=$IMAGE PE_TYPE=image/jpeg wrk -t 2 -c 16 -d 20s --timeout 30s -s bench/serve_post.lua \
        "http://127.0.0.1:$PORT/v1/banks/tire/predict" > "$T/soak" 2>&1 || true
    n=$(sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p' "$T/soak"); total=$((total + ${n:-0})); rounds=$((rounds + 1))
    bad=$(sed -n 's/.* non200=\([0-9]*\).*/\1/p' "$T/soak")
    echo "soak round $rounds: $n requests (non-200: ${bad:-?}), RSS $(( $(rss_kib "$SPID") / 1024 )) MiB"
done
wait_idle
r1=$(rss_kib "$SPID")
stop
echo "soak (size $SOAK_SIZE, 16 connections): $total requests, RSS $((r0 / 1024)) MiB -> $((r1 / 1024)) MiB ($(( (r1 - r0) )) KiB)"
echo "== load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
