#!/usr/bin/env bash
# bench/run.sh BUILD — `make bench`: one run that measures
#   1. OpenBLAS sgemm peak (2048^3, 1 and 2 threads) and which kernel OpenBLAS picked;
#   2. patchead ms/image, achieved GFLOP/s (FLOPs counted as in cli/bench.c) and
#      peak RSS for random-weight DINOv2 ViT-S/14 and ViT-B/14 at 224 and 448, 1 and 2
#      threads (one process per configuration, so the RSS is that configuration's);
#   3. the same configurations in PyTorch (tools/bench_torch.py) when torch is importable,
# then prints one table side by side. Environment: REPS (timed runs, default 3),
# MODELS (default "small base"), SIZES ("224 448"), THREADS ("1 2").
set -eu
BUILD=${1:-build}
P="$BUILD/patchead"
REPS=${REPS:-3}
MODELS=${MODELS:-small base}
SIZES=${SIZES:-224 448}
THREADS=${THREADS:-1 2}
# The CLI picks passive OpenMP waiting for itself (cli/main.c); the bench drivers too.
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ]; then export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=0; fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg) (numbers are noisy when other work runs)"
for t in $THREADS; do "$P" bench --sgemm --threads "$t" | tee -a "$T/sgemm"; done

for m in $MODELS; do
    "$P" bench --random-vit "$m" -o "$T/$m" >/dev/null
    for s in $SIZES; do
        for t in $THREADS; do
            "$P" bench --model "$T/$m" --size "$s" --threads "$t" --reps "$REPS" | tee -a "$T/ours"
        done
    done
    rm -rf "${T:?}/$m"
done

if python3 -c "import torch, transformers" 2>/dev/null; then
    comma() { echo "$1" | tr ' ' ','; }
    python3 "$(dirname "$0")/../tools/bench_torch.py" --models "$(comma "$MODELS")" \
        --sizes "$(comma "$SIZES")" --threads "$(comma "$THREADS")" --reps "$REPS" 2>/dev/null |
        tee "$T/torch"
else
    echo "(torch/transformers not importable: no PyTorch column)"
    : >"$T/torch"
fi

echo
echo "== ViT forward, ms/image (best of $REPS); GFLOP/s and % of the sgemm peak at the same thread count"
awk '
    FILENAME ~ /sgemm$/ { peak[$5] = $7; core = $9; next }
    FILENAME ~ /torch$/ { torch[$2 " " $4 " " $6] = $8; next }
    {
        key = $2 " " $4 " " $6
        n++; keys[n] = key; ms[key] = $8; gf[key] = $14; gfl[key] = $12; rss[key] = $16; thr[key] = $6
    }
    END {
        printf "%-14s %5s %3s %10s %9s %9s %7s %10s %8s\n", "model", "size", "thr", "patchead", "GFLOP/s",
               "%peak", "torch", "torch/ours", "RSS MB"
        for (i = 1; i <= n; i++) {
            k = keys[i]; split(k, f, " ")
            pk = peak[thr[k]] > 0 ? 100 * gf[k] / peak[thr[k]] : 0
            tm = (k in torch) ? sprintf("%.1f", torch[k]) : "-"
            ratio = (k in torch) ? sprintf("%.2f", torch[k] / ms[k]) : "-"
            printf "%-14s %5s %3s %10.1f %9.1f %8.0f%% %7s %10s %8s\n", f[1], f[2], f[3], ms[k], gf[k], pk,
                   tm, ratio, rss[k]
        }
        printf "OpenBLAS kernel: %s; sgemm peak:", core
        for (t in peak) printf " %s thread(s) %.1f GFLOP/s", t, peak[t]
        printf "\n"
    }' "$T/sgemm" "$T/torch" "$T/ours"

# Scoring (Eq. 1-4) throughput vs the sgemm peak of the same run: batch zero-shot of
# 12 random MobileNetV2-sized feature maps at 448 (G = 56*56, D = 128) and a 4-shot query.
if [ -x "$BUILD/bench/score_speed" ]; then
    echo
    echo "== scoring throughput (random features, G=3136, D=128)"
    for t in $THREADS; do "$BUILD/bench/score_speed" 12 3136 128 "$t"; done
fi

# CNN backbones with the real weights from `make weights` (when present).
if [ -x "$BUILD/bench/cnn_bench" ]; then
    for m in mobilenet_v2 efficientnet_lite0; do
        [ -e "weights/$m/model.safetensors" ] || { echo "(weights/$m missing: make weights)"; continue; }
        [ "$m" = mobilenet_v2 ] && { echo; echo "== CNN forward, ms/image (real weights)"; }
        for s in $SIZES; do for t in $THREADS; do "$BUILD/bench/cnn_bench" time "weights/$m" "$s" "$t" 7; done; done
    done
fi
