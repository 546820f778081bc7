# serve_common.sh — sourced by tests/cli_serve.sh, cli_serve_page.sh and cli_watch.sh (not a
# test itself): the PASS/FAIL helpers, a temp folder removed on exit, a background process
# (server or watcher) killed on exit, and start_server.
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=weights/mobilenet_v2
PY=/usr/bin/python3
T=$(mktemp -d)
BG_PID=
cleanup() { [ -n "$BG_PID" ] && kill -9 "$BG_PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name" "$*"; fi; }
# json FILE EXPR: evaluate a Python expression on the parsed JSON `j`; prints the value
json() { $PY -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null; }

# start_server SERVE-OPTIONS...: `patchead serve --port 0 ...` in the background under
# timeout; waits for its "listening" line and sets BG_PID, PORT and URL. Fails if the
# server does not come up within 30 s (stderr in $T/serve.err).
start_server() {
    : > "$T/out"
    timeout 300 "$PATCHEAD" serve --port 0 "$@" >"$T/out" 2>"$T/serve.err" &
    BG_PID=$!
    for _ in $(seq 300); do grep -q '^listening' "$T/out" 2>/dev/null && break; sleep 0.1; done
    PORT=$(sed -n 's/^listening http:\/\/127.0.0.1:\([0-9]*\)\/$/\1/p' "$T/out")
    URL="http://127.0.0.1:$PORT"
    [ -n "$PORT" ]
}

# stop_bg: SIGTERM the background process, wait, return its exit status.
stop_bg() { local rc; kill -TERM "$BG_PID"; wait "$BG_PID"; rc=$?; BG_PID=; return $rc; }
