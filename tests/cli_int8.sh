#!/usr/bin/env bash
# cli_int8.sh — `--precision int8` end to end (docs/ENGINE.md, "int8"):
#   - features of the tiny DINOv2 fixture in int8: close to fp32 (rel < 0.05), not equal;
#   - a CNN refuses int8 with one line naming it; a bad value lists int8 among the choices;
#   - the detection gate (needs PATCHEAD_DATA with mvtec3d_tire and weights/ from `make
#     weights`): `patchead eval` of the real DINOv2 ViT-S/14 at 224 px, block 9, 4-shot (1
#     seed) and zero-shot, in fp32 and int8; results.json records int8; int8's pixel AUROC
#     within 0.5 points and PRO within 1 point of fp32's in both settings. (The image AUROC
#     is printed, not gated: these weights rank the tire near chance, so it measures noise.)
# On a CPU without oneDNN's int8 brgemm kernels (AVX2, AVX-512 without VNNI; here also
# DNNL_MAX_CPU_ISA=AVX2) int8 falls back as documented (docs/ENGINE.md, "int8"): the
# linears run in fp32, so the features must equal fp32's up to the unfused passes (rel <
# 1e-5) where the attention is fp32 too (no AVX-512: no bf16 kernels), and stay within the
# int8 bound where the attention runs in bf16; the gate below then holds trivially.
set -u
. "$(dirname "$0")/lib_cli.sh"
FIX=tests/fixtures/vit

feat() { # feat OUT PRECISION
    timeout 120 "$PATCHEAD" features --threads 2 --precision "$2" --model "$FIX/dinov2" \
        --input-npy "$FIX/dinov2/input.npy" -o "$1" 2>"$T/err"
}
reldiff() {
    paste <(od -An -v -f -w4 -j128 "$1") <(od -An -v -f -w4 -j128 "$2") |
        awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; b = $2 < 0 ? -$2 : $2; if (b > r) r = b }
             END { printf "%.6g\n", (r > 0 ? m / r : m) }'
}
# the kernel oneDNN gives int8 products here, and its ISA: "impl brg:... isa ..."
gemm=$(timeout 120 "$PATCHEAD" bench --gemm --precision int8 --threads 1 --reps 1 2>"$T/err")
impl=$(printf '%s\n' "$gemm" | sed -n 's/.* impl \([^ ]*\) isa \([^ ]*\).*/\1/p')
isa=$(printf '%s\n' "$gemm" | sed -n 's/.* impl \([^ ]*\) isa \([^ ]*\).*/\2/p')
check int8_kernel_reported test -n "$impl" -a -n "$isa"
feat "$T/f32.npy" fp32 && feat "$T/i8.npy" int8
check int8_features_run test $? -eq 0 -a -s "$T/i8.npy"
d=$(reldiff "$T/i8.npy" "$T/f32.npy")
case "$impl" in
brg:*)
    echo "  tiny dinov2 features int8 vs fp32: rel $d (int8 kernel $impl)"
    check int8_features_close awk -v d="$d" 'BEGIN { exit !(d > 0 && d < 0.05) }' ;;
*)
    case "$isa" in
    avx512*) # fp32 linears, bf16 attention
        echo "  tiny dinov2 features int8 vs fp32: rel $d (no int8 kernel: $impl on $isa; fp32 linears, bf16 attention)"
        check int8_fallback_close awk -v d="$d" 'BEGIN { exit !(d < 0.05) }' ;;
    *) # fp32 linears, fp32 attention: fp32's numbers
        echo "  tiny dinov2 features int8 vs fp32: rel $d (no int8 kernel: $impl on $isa; the fp32 fallback)"
        check int8_fallback_is_fp32 awk -v d="$d" 'BEGIN { exit !(d < 1e-5) }' ;;
    esac ;;
esac

"$PATCHEAD" features --precision int9 --model "$FIX/dinov2" --input-npy "$FIX/dinov2/input.npy" \
    -o "$T/x.npy" 2>"$T/err"
check int8_bad_value_lists_int8 grep -q "fp32, bf16, auto or int8" "$T/err"
if [ -e weights/mobilenet_v2/model.safetensors ]; then
    "$PATCHEAD" features --precision int8 --model weights/mobilenet_v2 --input-npy \
        "$FIX/dinov2/input.npy" -o "$T/x.npy" 2>"$T/err"
    check int8_cnn_refused sh -c "test \$(wc -l <'$T/err') -eq 1 && grep -q 'int8 is for ViT backbones; mobilenet_v2 is a CNN' '$T/err'"
fi

MODEL=weights/dinov2_small_imgfocus
TIRE=${PATCHEAD_DATA:-}/mvtec3d_tire
if [ -z "${PATCHEAD_DATA:-}" ] || [ ! -d "$TIRE/test" ]; then
    echo "SKIP int8_tire_gate: PATCHEAD_DATA (with mvtec3d_tire) not set"
    exit 0
fi
if [ ! -e "$MODEL/model.safetensors" ]; then
    echo "SKIP int8_tire_gate: $MODEL absent (make weights)"
    exit 0
fi
# The weights' own last layer ranks tire images at chance (docs/BACKBONES.md), so an
# I-AUROC bound there measures noise; block 9 localises (P-AUROC ~96), so the gate is on the
# pixel metrics of --layer 9: int8 within 0.5 points of fp32 for P-AUROC, 1 point for PRO. The
# image AUROCs are printed (the issue's I-AUROC gate needs weights that rank this category).
for p in fp32 int8; do
    timeout 300 "$PATCHEAD" eval --model "$MODEL" --data "$TIRE" --size 224 --layer 9 --shots 4 \
        --seeds 1 --zeroshot --precision "$p" --threads 2 -o "$T/ev_$p" >"$T/ev_$p.log" 2>&1
    check "int8_gate_eval_$p" test $? -eq 0 -a -s "$T/ev_$p/results.csv"
done
check int8_results_json_records grep -q '"precision":[[:space:]]*"int8"' "$T/ev_int8/results.json"
metric() { # metric PRECISION SETTING COLUMN -> points
    awk -F, -v s="$2" -v c="$3" '$1 == s && $2 == "mvtec3d_tire" { printf "%.2f\n", 100 * $c }' "$T/ev_$1/results.csv"
}
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; exit !(a != "" && d <= t && d >= -t) }'; }
for s in 4-shot zero-shot; do
    echo "  tire $s (layer 9) I-AUROC fp32 $(metric fp32 "$s" 8) int8 $(metric int8 "$s" 8);" \
        "P-AUROC $(metric fp32 "$s" 11) / $(metric int8 "$s" 11); PRO $(metric fp32 "$s" 12) / $(metric int8 "$s" 12)"
    check "int8_tire_p_auroc_$s" within "$(metric fp32 "$s" 11)" "$(metric int8 "$s" 11)" 0.5
    check "int8_tire_pro_$s" within "$(metric fp32 "$s" 12)" "$(metric int8 "$s" 12)" 1.0
done
