#!/usr/bin/env bash
# bench/vs_torch.sh BUILD — patchead and PyTorch (transformers Dinov2Model) alternating,
# one forward timing of each per round, best of each series (ms/image).
#
# Why alternate: on a shared host the speed of the same binary can change by 1.5-2x from
# one minute to the next (docs/ENGINE.md, Measurements); `make bench` times all of
# patchead first and all of PyTorch after, so its ratios can compare a fast minute with a
# slow one. Alternating gives both sides the same chances.
#
# Environment: ROUNDS (4), MODELS ("small base"), PRECISIONS ("fp32 bf16"), SIZE (448),
# THREADS (2), REPS per timing (3), PYTHON (python3; must import torch + transformers).
set -eu
BUILD=${1:-build}
P="$BUILD/patchead"
ROUNDS=${ROUNDS:-4}
MODELS=${MODELS:-small base}
PRECISIONS=${PRECISIONS:-fp32 bf16}
SIZE=${SIZE:-448}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
    echo "vs_torch: $PYTHON cannot import torch + transformers (set PYTHON=...)" >&2
    exit 2
fi
if [ -z "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ]; then export OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000; fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
for m in $MODELS; do "$P" bench --random-vit "$m" -o "$T/$m" >/dev/null; done
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads, $SIZE px, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
    for m in $MODELS; do
        for p in $PRECISIONS; do
            ours=$("$P" bench --model "$T/$m" --size "$SIZE" --threads "$THREADS" --reps "$REPS" \
                --precision "$p" | awk '{ print $8 }')
            torch=$("$PYTHON" "$(dirname "$0")/../tools/bench_torch.py" --models "$m" --sizes "$SIZE" \
                --threads "$THREADS" --reps "$REPS" --precisions "$p" 2>/dev/null | awk '{ print $8 }')
            echo "round $r $m $p patchead $ours torch $torch"
        done
    done
done | tee "$T/runs"
echo "== best of $ROUNDS (ms/image)"
awk '{ k = $3 " " $4; if (!(k in o) || $6 < o[k]) o[k] = $6; if (!(k in t) || $8 < t[k]) t[k] = $8 }
     END { for (k in o) printf "%-12s patchead %8.1f  torch %8.1f  torch/patchead %.2f\n", k, o[k], t[k], t[k] / o[k] }' \
    "$T/runs" | sort
