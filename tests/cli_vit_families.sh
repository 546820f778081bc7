#!/usr/bin/env bash
# cli_vit_families.sh — the newer ViT families through the CLI on their tiny fixtures:
# `info` names each family, `features` runs on a real image (with --attn and --layer),
# `zeroshot --mask` runs with a RoPE / no-CLS backbone, and bad layouts fail with one
# line naming the file. One PASS/FAIL line per check.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
FIX=tests/fixtures/vit
IMG=examples/tire/test/defect/hole_000.jpg
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
run() {
    timeout 120 "$@" >"$T/out" 2>"$T/err"
    echo $?
}
npy_shape() { head -c 128 "$1" | tr -d '\0' | grep -ao "'shape': ([0-9, ]*)" | sed "s/'shape': //"; }

for case in dinov3:dinov3:16 dinov3_glu:dinov3:16 eva02:eva02:14 pe_spatial:pe_spatial:16 mae:mae:16 \
    beit:beit:16 siglip:siglip:16 siglip2:siglip2:16 dinov3_timm:dinov3:16; do
    IFS=: read -r dir fam p <<<"$case"
    rc=$(run "$PATCHEAD" info --model "$FIX/$dir")
    if [ "$rc" -eq 0 ] && grep -q "^family  *$fam\$" "$T/out" && grep -q "^patch size  *$p\$" "$T/out" &&
        grep -q "^attention  *yes" "$T/out"; then pass "info_$dir"
    else fail "info_$dir" "rc $rc: $(head -c 300 "$T/out" "$T/err")"; fi
    # a real image at 8 x 8 patches, last layer with attention, then block 1
    S=$((8 * p))
    rc=$(run "$PATCHEAD" features --model "$FIX/$dir" --size $S "$IMG" -o "$T/f.npy" --attn "$T/a.npy")
    if [ "$rc" -eq 0 ] && [ "$(npy_shape "$T/f.npy")" = "(64, 32)" ] && [ "$(npy_shape "$T/a.npy")" = "(8, 8)" ]; then
        pass "features_$dir"
    else fail "features_$dir" "rc $rc: $(head -c 300 "$T/err")"; fi
    rc=$(run "$PATCHEAD" features --model "$FIX/$dir" --size $S --layer 1 "$IMG" -o "$T/l1.npy")
    if [ "$rc" -eq 0 ] && [ "$(npy_shape "$T/l1.npy")" = "(64, 32)" ] && ! cmp -s "$T/f.npy" "$T/l1.npy"; then
        pass "features_layer1_$dir"
    else fail "features_layer1_$dir" "rc $rc: $(head -c 300 "$T/err")"; fi
done

# zero-shot with attention masking on a RoPE backbone and on a no-CLS one (pooling-head attention)
for dir in dinov3 siglip2; do
    rc=$(run "$PATCHEAD" zeroshot --model "$FIX/$dir" --size 64 --mask --quiet --out "$T/zs_$dir" \
        examples/tire/test/good/good_000.jpg examples/tire/test/good/good_001.jpg "$IMG")
    if [ "$rc" -eq 0 ] && [ "$(wc -l <"$T/zs_$dir/scores.csv")" -eq 4 ]; then pass "zeroshot_mask_$dir"
    else fail "zeroshot_mask_$dir" "rc $rc: $(head -c 300 "$T/err")"; fi
done

# bad layouts: one stderr line naming the file, exit 1
expect_error() {
    local name=$1 pattern=$2
    shift 2
    local rc
    rc=$(run "$@")
    if [ "$rc" -ne 1 ]; then fail "$name" "exit status $rc"
    elif [ "$(wc -l <"$T/err")" -ne 1 ]; then fail "$name" "stderr: $(head -c 300 "$T/err")"
    elif ! grep -q -- "$pattern" "$T/err"; then fail "$name" "stderr lacks '$pattern': $(cat "$T/err")"
    else pass "$name"; fi
}
mkdir -p "$T/timm_noconfig" "$T/timm_other"
cp "$FIX/eva02/model.safetensors" "$T/timm_noconfig/"
expect_error timm_without_config "timm_noconfig/model.safetensors: timm weights need the hub's config.json" \
    "$PATCHEAD" info --model "$T/timm_noconfig"
cp "$FIX/eva02/model.safetensors" "$T/timm_other/"
echo '{"architecture": "vit_base_patch16_224"}' >"$T/timm_other/config.json"
expect_error timm_other_architecture "architecture 'vit_base_patch16_224' is not supported" \
    "$PATCHEAD" info --model "$T/timm_other"
