#!/usr/bin/env bash
# bench/coreset_accuracy.sh — the tire I-AUROC of a 10 % coreset bank with the default
# random projection against none, over several seeds of the selection (docs/BEYOND.md,
# "Coreset selection that scales": a single selection's AUROC moves by points with its
# seeded first centre, so the comparison is of means).
#   PATCHEAD_DATA=../shared/data bash bench/coreset_accuracy.sh [BUILD]
# Environment: MODEL (weights/efficientnet_lite0: D = 152, so the default projects to 128),
# SIZE (224), SEEDS ("0 1 2 3"), CORESET (0.1). Prints one line per run, then the means.
set -eu
BUILD=${1:-build}
P="$BUILD/patchead"
MODEL=${MODEL:-weights/efficientnet_lite0}
SIZE=${SIZE:-224}
SEEDS=${SEEDS:-0 1 2 3}
CORESET=${CORESET:-0.1}
TIRE="${PATCHEAD_DATA:?set PATCHEAD_DATA to the folder holding mvtec3d_tire}/mvtec3d_tire"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# I-AUROC (%) of scores.csv: positives are the images outside test/good; ties count one half
auroc() {
    awk -F, 'NR > 1 { n++; s[n] = $2 + 0; p[n] = ($1 !~ /\/good\//) }
        END { for (i = 1; i <= n; i++) if (p[i]) for (j = 1; j <= n; j++) if (!p[j])
                { pairs++; w += (s[i] > s[j]) + 0.5 * (s[i] == s[j]) }
            printf "%.2f\n", 100 * w / pairs }' "$1"
}
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $MODEL at $SIZE px, coreset $CORESET"
for seed in $SEEDS; do
    for proj in 0 -1; do
        "$P" fit --quiet --model "$MODEL" --size "$SIZE" --shots all --coreset "$CORESET" \
            --coreset-proj "$proj" --seed "$seed" -o "$T/b.pead" "$TIRE/train/good"
        "$P" predict --quiet --no-maps --bank "$T/b.pead" --out "$T/p" "$TIRE/test"
        echo "proj $proj seed $seed I-AUROC $(auroc "$T/p/scores.csv")" | tee -a "$T/rows"
    done
done
awk '{ s[$2] += $6; q[$2] += $6 * $6; n[$2]++ }
     END { for (p in s) { m = s[p] / n[p]; v = n[p] > 1 ? (q[p] - n[p] * m * m) / (n[p] - 1) : 0
                          printf "%s: mean %.2f sd %.2f over %d seeds\n",
                                 p == "0" ? "default projection" : "none", m, sqrt(v < 0 ? 0 : v), n[p] } }' "$T/rows"
