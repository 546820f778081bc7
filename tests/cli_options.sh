#!/usr/bin/env bash
# cli_options.sh — the one option table (cli/options.c): every subcommand parses the shared
# options with the same ranges and messages and lists them identically in --help; eval
# takes the scoring overrides, features takes --quiet; unknown options and missing values
# are usage errors (exit 2) naming the option. Real weights (weights/mobilenet_v2) are used
# where a run must succeed; without them those checks SKIP.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=weights/mobilenet_v2
T=$(mktemp -d /tmp/pe_cli_options.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
[ -x "$PATCHEAD" ] || { echo "FAIL cli_options: $PATCHEAD not built"; exit 1; }
CMDS="info features fit predict zeroshot eval bench"
run() { timeout 120 "$PATCHEAD" "$@"; }

# --help of each subcommand, as blocks "option line + its continuation lines", one file
# per option name per subcommand.
for c in $CMDS; do
    run "$c" --help >"$T/help.$c" 2>&1 || fail "help_$c" "exit $?"
    awk -v dir="$T/opt.$c" 'BEGIN { system("mkdir -p " dir) }
        /^  (-., )?    --|^  -., --/ { match($0, /--[a-z0-9-]+/); name = substr($0, RSTART + 2, RLENGTH - 2); print > (dir "/" name); next }
        /^                        / && name != "" { print >> (dir "/" name); next }
        { name = "" }' "$T/help.$c"
done

# 1. each shared option is listed with the same text by every subcommand that takes it
shared="model size layer preset order k top align mask plus sigma threads quiet help"
bad=""
for o in $shared; do
    ref="" seen=0
    for c in $CMDS; do
        [ "$c" = predict ] && [ "$o" = model ] && continue # predict's --model defaults to the bank's
        f="$T/opt.$c/$o"
        [ -f "$f" ] || continue
        seen=$((seen + 1))
        if [ -z "$ref" ]; then ref=$f; elif ! cmp -s "$ref" "$f"; then bad="$bad $o($c)"; fi
    done
    [ $seen -ge 3 ] || bad="$bad $o(listed by $seen subcommands)"
done
[ -z "$bad" ] && pass help_shared_identical || fail help_shared_identical "differs:$bad"

# 2. the README's shared options are taken by fit, zeroshot and eval; --threads/--quiet by all
missing=""
for c in fit zeroshot eval; do
    for o in size preset order k top align mask plus sigma threads quiet; do
        [ -f "$T/opt.$c/$o" ] || missing="$missing $c:--$o"
    done
done
for c in $CMDS; do
    for o in threads quiet help; do [ -f "$T/opt.$c/$o" ] || missing="$missing $c:--$o"; done
done
[ -z "$missing" ] && pass help_shared_present || fail help_shared_present "missing:$missing"

# 3. the same bad value gets the same message and exit 2 everywhere
same_error() { # NAME EXPECTED-STDERR SUBCOMMANDS... -- ARGS...
    local name=$1 want=$2; shift 2
    local cmds=() c
    while [ "$1" != -- ]; do cmds+=("$1"); shift; done
    shift
    local why=""
    for c in "${cmds[@]}"; do
        run "$c" "$@" >"$T/out" 2>"$T/err"
        local rc=$?
        [ $rc -eq 2 ] || why="$why $c:exit=$rc"
        [ "$(cat "$T/err")" = "$want" ] || why="$why $c:'$(head -c 200 "$T/err")'"
    done
    [ -z "$why" ] && pass "$name" || fail "$name" "$why"
}
same_error size_range "patchead: error: --size expects an integer in 32..4096, got '16'" \
    features fit zeroshot eval bench -- --size 16
same_error threads_range "patchead: error: --threads expects an integer in 0..4096, got '-1'" \
    $CMDS -- --threads -1
same_error k_value "patchead: error: --k expects a number in 1e-09..1, got '1.5'" \
    fit zeroshot eval -- --k 1.5
same_error order_value "patchead: error: --order expects lowest or highest, got 'middle'" \
    fit zeroshot eval -- --order middle
same_error sigma_range "patchead: error: --sigma expects a number in 0..1000, got 'x'" \
    fit predict zeroshot eval -- --sigma x
for c in $CMDS; do
    same_error "unknown_option_$c" \
        "patchead: error: $c: unknown option '--bogus' (see patchead $c --help)" "$c" -- --bogus
done
same_error missing_value "patchead: error: fit: option '--size' needs a value (see patchead fit --help)" \
    fit -- --model x --size

# 4. eval and features take the options the README says are shared (a wrong model path
# is then a run-time error, exit 1, not a usage error, exit 2)
run eval --k 3 --order lowest --top 0.02 --quiet --model "$T/none" --data examples/tire \
    --shots 1 --out "$T/ev0" >"$T/out" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && grep -q "$T/none" "$T/err" && pass eval_scoring_options_parsed ||
    fail eval_scoring_options_parsed "exit $rc: $(head -c 200 "$T/err")"
run features --quiet --model "$T/none" examples/tire/test/good/good_000.jpg -o "$T/f.npy" \
    >"$T/out" 2>"$T/err"
rc=$?
[ $rc -eq 1 ] && pass features_quiet_parsed || fail features_quiet_parsed "exit $rc: $(head -c 200 "$T/err")"

if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "SKIP eval_scoring_options_run: $MODEL absent (make weights)"
    echo "SKIP features_quiet_run: $MODEL absent (make weights)"
    exit 0
fi

# 5. the overrides reach eval's scoring: --top 1 (the single worst patch) differs from the
# default top 1%, and eval --quiet prints nothing on stderr
ev() { run eval --model "$MODEL" --data examples/tire --shots 2 --seeds 1 --size 224 --threads 1 "$@"; }
ev --k 3 --order lowest --top 0.02 --quiet --out "$T/ev1" >"$T/out" 2>"$T/err"
rc=$?
ev --k 3 --order lowest --top 1 --quiet --out "$T/ev2" >/dev/null 2>&1
if [ $rc -eq 0 ] && [ ! -s "$T/err" ] && [ -s "$T/ev1/scores.csv" ] && [ -s "$T/ev2/scores.csv" ] &&
    ! cmp -s "$T/ev1/scores.csv" "$T/ev2/scores.csv"; then
    pass eval_scoring_options_run
else
    fail eval_scoring_options_run "exit $rc, stderr '$(head -c 200 "$T/err")', or --top had no effect"
fi
run features --quiet --model "$MODEL" --size 224 examples/tire/test/good/good_000.jpg -o "$T/f.npy" \
    >"$T/out" 2>&1
rc=$?
[ $rc -eq 0 ] && [ ! -s "$T/out" ] && [ -s "$T/f.npy" ] && pass features_quiet_run ||
    fail features_quiet_run "exit $rc, output '$(head -c 200 "$T/out")'"
