#!/usr/bin/env bash
# cli_model.sh — `patchead info` / `features` / `bench` end to end on the tiny ViT
# fixtures, plus bad inputs: each must fail with one line on stderr naming the file,
# a non-zero exit, and no output file left behind. One PASS/FAIL line per check.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
FIX=tests/fixtures/vit
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# check NAME EXPECTED_RC COMMAND... : runs, captures stdout/stderr in $T/out, $T/err
run() {
    "$@" >"$T/out" 2>"$T/err"
    echo $?
}

# An .npy file's shape, from its header: "(30, 64)".
npy_shape() { head -c 128 "$1" | tr -d '\0' | grep -ao "'shape': ([0-9, ]*)" | sed "s/'shape': //"; }

# expect_error NAME PATTERN OUTFILE COMMAND...: non-zero exit, exactly one stderr line
# containing PATTERN, OUTFILE absent afterwards.
expect_error() {
    local name=$1 pattern=$2 outfile=$3
    shift 3
    rm -f "$outfile"
    local rc
    rc=$(run "$@")
    local lines
    lines=$(wc -l <"$T/err")
    if [ "$rc" -eq 0 ]; then fail "$name" "exit status 0"
    elif [ "$lines" -ne 1 ]; then fail "$name" "$lines stderr lines: $(head -c 300 "$T/err")"
    elif ! grep -q -- "$pattern" "$T/err"; then fail "$name" "stderr lacks '$pattern': $(cat "$T/err")"
    elif [ -n "$outfile" ] && ls "$outfile"* >/dev/null 2>&1; then fail "$name" "output file left behind"
    else pass "$name"; fi
}

# --- help
for cmd in info features bench; do
    rc=$(run "$PATCHEAD" "$cmd" --help)
    if [ "$rc" -eq 0 ] && grep -q "usage: patchead $cmd" "$T/out"; then pass "help_$cmd"
    else fail "help_$cmd" "rc $rc"; fi
done

# --- info on every family
for case in dinov2:dinov2 dinov2_reg:dinov2_reg clip:clip openclip:openclip dinov2_f16:dinov2 clip_bf16:clip; do
    dir=${case%%:*} fam=${case##*:}
    rc=$(run "$PATCHEAD" info --model "$FIX/$dir")
    if [ "$rc" -eq 0 ] && grep -q "^family  *$fam\$" "$T/out" && grep -q "^feature dim  *64" "$T/out" &&
        grep -q "^weights hash  *[0-9a-f]\{16\}" "$T/out"; then pass "info_$dir"
    else fail "info_$dir" "rc $rc: $(head -c 300 "$T/err")"; fi
done
rc=$(run "$PATCHEAD" info --model "$FIX/dinov2_f16" --json)
if [ "$rc" -eq 0 ] && grep -q '"dtype": "F16"' "$T/out" && grep -q '"num_params": 106240' "$T/out"; then
    pass info_json
else fail info_json "rc $rc: $(cat "$T/out" "$T/err" | head -c 300)"; fi

# --- features from a normalised tensor (the parity path) and from an image
rc=$(run "$PATCHEAD" features --model "$FIX/dinov2_reg" --input-npy "$FIX/dinov2_reg/input.npy" \
    -o "$T/f.npy" --attn "$T/a.npy")
if [ "$rc" -eq 0 ] && [ "$(npy_shape "$T/f.npy")" = "(30, 64)" ] && [ "$(npy_shape "$T/a.npy")" = "(5, 6)" ] &&
    [ "$(stat -c %s "$T/f.npy")" -eq $((128 + 30 * 64 * 4)) ]; then pass features_input_npy
else fail features_input_npy "rc $rc shape $(npy_shape "$T/f.npy" 2>/dev/null): $(cat "$T/err")"; fi

rc=$(run "$PATCHEAD" features --model "$FIX/dinov2_reg" --input-npy "$FIX/dinov2_reg/input.npy" \
    --layer 1 -o "$T/l1.npy")
if [ "$rc" -eq 0 ] && [ "$(npy_shape "$T/l1.npy")" = "(30, 64)" ] && ! cmp -s "$T/l1.npy" "$T/f.npy"; then
    pass features_layer1
else fail features_layer1 "rc $rc: $(cat "$T/err")"; fi

IMG=examples/tire/test/good/good_000.jpg
if [ -f "$IMG" ]; then
    rc=$(run "$PATCHEAD" features --model "$FIX/clip" --size 64 --threads 1 "$IMG" -o "$T/img.npy" --attn "$T/img_a.npy")
    if [ "$rc" -eq 0 ] && [ "$(npy_shape "$T/img.npy")" = "(16, 64)" ] && [ "$(npy_shape "$T/img_a.npy")" = "(4, 4)" ]; then
        pass features_image
    else fail features_image "rc $rc: $(cat "$T/err")"; fi
else echo "SKIP features_image: $IMG absent"; fi

# --- bench on a tiny model (fast)
rc=$(run "$PATCHEAD" bench --model "$FIX/dinov2" --size 56 --threads 1 --reps 1)
if [ "$rc" -eq 0 ] && grep -q "^model dinov2-d64 size 56 threads 1 ms_best [0-9.]* .*gflops [0-9.]* peak_rss_mb [0-9]*" "$T/out"; then
    pass bench_model
else fail bench_model "rc $rc: $(cat "$T/out" "$T/err" | head -c 300)"; fi

# --- bench --profile: each step of the forward timed, the steps adding up to the forward
# (all but the few copies between them: at least 50 %, never more than the wall time)
for prec in fp32 bf16; do
    rc=$(run "$PATCHEAD" bench --model "$FIX/dinov2" --size 56 --threads 1 --reps 2 --precision "$prec" --profile)
    steps=$(grep -cE '^  (layer norms|qkv projection|attention: QK\^T, softmax, PV|out-projection \+ residual|fc1 \+ activation|fc2 \+ residual) ' "$T/out")
    if [ "$rc" -eq 0 ] && [ "$steps" -eq 6 ] &&
        awk '/sum of the steps/ { s = $NF } /forward \(wall\)/ { w = $NF }
             END { exit !(w > 0 && s >= 0.5 * w && s <= w * 1.001 + 0.01) }' "$T/out"; then
        pass "bench_profile_$prec"
    else fail "bench_profile_$prec" "rc $rc, $steps steps: $(cat "$T/out" "$T/err" | head -c 600)"; fi
done
rc=$(run "$PATCHEAD" bench --model "$FIX/dinov2" --size 56 --threads 1 --reps 1)
if [ "$rc" -eq 0 ] && ! grep -q 'profile' "$T/out"; then pass bench_no_profile_by_default
else fail bench_no_profile_by_default "$(head -c 300 "$T/out")"; fi

# --- bad inputs
expect_error missing_model "nope/none" "$T/o.npy" \
    "$PATCHEAD" features --model "$T/nope/none" --input-npy "$FIX/dinov2/input.npy" -o "$T/o.npy"
mkdir -p "$T/empty"
expect_error dir_without_weights "$T/empty: directory has no model.safetensors" "$T/o.npy" \
    "$PATCHEAD" features --model "$T/empty" --input-npy "$FIX/dinov2/input.npy" -o "$T/o.npy"
mkdir -p "$T/trunc"
cp "$FIX/dinov2/config.json" "$T/trunc/"
head -c 200000 "$FIX/dinov2/model.safetensors" >"$T/trunc/model.safetensors"
expect_error truncated_weights "$T/trunc/model.safetensors: .*truncated" "$T/o.npy" \
    "$PATCHEAD" features --model "$T/trunc" --input-npy "$FIX/dinov2/input.npy" -o "$T/o.npy"
head -c 4000 /dev/urandom >"$T/garbage.safetensors"
expect_error corrupt_weights "$T/garbage.safetensors" "$T/o.npy" \
    "$PATCHEAD" features --model "$T/garbage.safetensors" --input-npy "$FIX/dinov2/input.npy" -o "$T/o.npy"
expect_error unsupported_arch "mixed.safetensors: unsupported architecture" "$T/o.npy" \
    "$PATCHEAD" features --model tests/fixtures/safetensors/mixed.safetensors \
    --input-npy "$FIX/dinov2/input.npy" -o "$T/o.npy"
expect_error info_unsupported "mixed.safetensors: unsupported architecture" "" \
    "$PATCHEAD" info --model tests/fixtures/safetensors/mixed.safetensors
expect_error bad_layer "layer 7 is outside 0..2" "$T/o.npy" \
    "$PATCHEAD" features --model "$FIX/dinov2" --input-npy "$FIX/dinov2/input.npy" --layer 7 -o "$T/o.npy"
expect_error bad_size "not a multiple of the patch size 14" "$T/o.npy" \
    "$PATCHEAD" features --model "$FIX/dinov2" --size 100 "$IMG" -o "$T/o.npy"
expect_error missing_image "no_such.png" "$T/o.npy" \
    "$PATCHEAD" features --model "$FIX/dinov2" "$T/no_such.png" -o "$T/o.npy"
expect_error input_not_chw "expected a (3, H, W) array" "$T/o.npy" \
    "$PATCHEAD" features --model "$FIX/dinov2" --input-npy "$FIX/dinov2/patch.npy" -o "$T/o.npy"
expect_error missing_output "needs --model, -o" "" "$PATCHEAD" features --model "$FIX/dinov2" "$IMG"
expect_error unwritable_output "$T/nodir/o.npy" "$T/nodir/o.npy" \
    "$PATCHEAD" features --model "$FIX/dinov2" --input-npy "$FIX/dinov2/input.npy" -o "$T/nodir/o.npy"
CNN=tests/fixtures/cnn/mobilenet_v2_025
if [ -f "$CNN/model.safetensors" ]; then
    expect_error cnn_attention "has no CLS attention" "$T/o.npy" \
        "$PATCHEAD" features --model "$CNN" --size 64 "$IMG" -o "$T/o.npy" --attn "$T/oa.npy"
else echo "SKIP cnn_attention: no CNN fixture"; fi
exit 0
