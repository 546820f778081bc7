#!/usr/bin/env bash
# Few-shot anomaly detection on the bundled tire examples (see examples/LICENSE.md):
#   make && make weights && bash examples/run.sh
# Fits a bank on 8 normal tires (examples/tire/train/good and examples/tire_more_good; the
# bank's threshold is the leave-one-out maximum over them), scores 2 normal and 2 defective
# ones (examples/tire/test), and writes
# scores.csv, maps/ and heatmaps/ into ${OUT:-patchead-out/examples}.
set -euo pipefail
cd "$(dirname "$0")/.."
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=${MODEL:-weights/efficientnet_lite0}
OUT=${OUT:-patchead-out/examples}
SIZE=${SIZE:-448}
if [ ! -x "$PATCHEAD" ]; then echo "examples/run.sh: $PATCHEAD missing: run make first" >&2; exit 1; fi
if [ ! -e "$MODEL" ]; then echo "examples/run.sh: $MODEL missing: run make weights first" >&2; exit 1; fi
# the bank sits beside the output folder: predict replaces "$OUT" as a whole
BANK=${BANK:-$(dirname "$OUT")/tire.pead}
mkdir -p "$(dirname "$OUT")"
echo "examples/run.sh: backbone $MODEL, input $SIZE px"
"$PATCHEAD" fit --model "$MODEL" --size "$SIZE" -o "$BANK" examples/tire/train/good examples/tire_more_good
"$PATCHEAD" predict --bank "$BANK" --out "$OUT" examples/tire/test
echo
column -s, -t < "$OUT/scores.csv" 2>/dev/null || cat "$OUT/scores.csv"
echo
echo "heatmaps: $OUT/heatmaps/   (anomaly maps as .npy: $OUT/maps/)"
