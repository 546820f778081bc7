#!/usr/bin/env bash
# beyond.sh — the measurements of docs/BEYOND.md in one command:
#   PATCHEAD_DATA=/path/to/data bash bench/beyond.sh [OUT_DIR] [PART...]
# PARTS: rotations window coreset threshold (default: all four). Environment:
#   SIZE (default 224; the doc gives 448 for the key rows), SEEDS (3), THREADS (2),
#   PATCHEAD (build/patchead), MODEL (weights/mobilenet_v2), DATASETS ("tire leather"),
#   ROT_CONFIGS ("rot1 rot4 rot8 rot4f align"), WINDOWS ("0 1 2 4"), CORESET_SEEDS (1),
#   THR_SIZES ("loo 19 59 119": calibration sizes of the threshold part),
#   TABLES_ONLY=1 (write the tables from the runs already there, run nothing).
# Each part writes its tables to OUT_DIR/<part>.md (and keeps every eval folder), and
# prints the CPU and load average next to its timings.
set -eu
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=${MODEL:-weights/mobilenet_v2}
SIZE=${SIZE:-224}
SEEDS=${SEEDS:-3}
THREADS=${THREADS:-2}
OUT=${1:-out/beyond}
shift || true
PARTS=${*:-rotations window coreset threshold}
: "${PATCHEAD_DATA:?set PATCHEAD_DATA to the folder holding mvtec3d_tire and mvtec_leather_subset}"
DATASETS=${DATASETS:-tire leather}
ROT_CONFIGS=${ROT_CONFIGS:-rot1 rot4 rot8 rot4f align}
WINDOWS=${WINDOWS:-0 1 2 4}
CORESET_SEEDS=${CORESET_SEEDS:-1}
TIRE=$PATCHEAD_DATA/mvtec3d_tire
LEATHER=$PATCHEAD_DATA/mvtec_leather_subset
mkdir -p "$OUT"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
stamp() { echo "<!-- $(date -u +%FT%TZ) cpu: $cpu; $(uptime | sed 's/.*load/load/') -->"; }

# eval NAME DATA SHOTS [options...]: one eval run into $OUT/NAME (skipped when done)
run_eval() {
    local name=$1 data=$2 shots=$3
    shift 3
    if [ -z "${TABLES_ONLY:-}" ] && [ ! -s "$OUT/$name/results.csv" ]; then
        timeout 7200 "$PATCHEAD" eval --quiet --model "$MODEL" --data "$data" --shots "$shots" \
            --seeds "$SEEDS" --size "$SIZE" --threads "$THREADS" --out "$OUT/$name" "$@"
    fi
}

# table TITLE NAME...: mean +- sd over seeds of I-AUROC / P-AUROC / PRO per setting
table() {
    local title=$1
    shift
    echo
    echo "$title"
    echo
    echo "| run | setting | I-AUROC | P-AUROC | PRO | s/setting |"
    echo "|---|---|---|---|---|---|"
    for name in "$@"; do
        [ -s "$OUT/$name/results.csv" ] || continue
        awk -F, -v run="$name" '
            NR > 1 && $2 != "mean" {
                k = $1; n[k]++; order[k] = order[k] ? order[k] : ++no; key[no] = k
                for (m = 8; m <= 12; m++) if ($m != "") { s[k, m] += $m; q[k, m] += $m * $m; c[k, m]++ }
                t[k] += $15
            }
            function fmt(k, m,   mu, sd) {
                if (!c[k, m]) return "n/a"
                mu = s[k, m] / c[k, m]; sd = q[k, m] / c[k, m] - mu * mu; sd = sd > 0 ? sqrt(sd) : 0
                return sprintf("%.1f ± %.1f", 100 * mu, 100 * sd)
            }
            END { for (i = 1; i <= no; i++) { k = key[i]
                printf "| %s | %s | %s | %s | %s | %.1f |\n", run, k, fmt(k, 8), fmt(k, 11), fmt(k, 12), t[k] / n[k] } }
        ' "$OUT/$name/results.csv"
    done
}

for part in $PARTS; do
case $part in
rotations)
    for d in $DATASETS; do
        data=$TIRE; [ $d = leather ] && data=$LEATHER
        for c in $ROT_CONFIGS; do
            case $c in
            rot1) run_eval "rot1_$d" "$data" 1,2,4 ;;
            rot4) run_eval "rot4_$d" "$data" 1,2,4 --rotations 4 ;;
            rot8) run_eval "rot8_$d" "$data" 1,2,4 --rotations 8 ;;
            rot4f) run_eval "rot4f_$d" "$data" 1,2,4 --rotations 4 --flips ;;
            align) run_eval "align_$d" "$data" 1,2,4 --align ;;
            esac
        done
    done
    { stamp; table "Rotations (size $SIZE, $SEEDS seeds), tire" rot1_tire rot4_tire rot8_tire rot4f_tire align_tire
      table "Rotations (size $SIZE, $SEEDS seeds), leather" rot1_leather rot4_leather rot8_leather rot4f_leather align_leather
    } > "$OUT/rotations.md"
    ;;
window)
    for d in $DATASETS; do
        data=$TIRE; [ $d = leather ] && data=$LEATHER
        run_eval "rot1_$d" "$data" 1,2,4
        for r in $WINDOWS; do run_eval "win${r}_$d" "$data" 1,2,4 --window $r; done
    done
    { stamp; table "Positional scoring (size $SIZE, $SEEDS seeds), tire" rot1_tire win0_tire win1_tire win2_tire win4_tire
      table "Positional scoring (size $SIZE, $SEEDS seeds), leather" rot1_leather win0_leather win1_leather win2_leather win4_leather
    } > "$OUT/window.md"
    ;;
coreset)
    # quality: full-shot (all 239 tire training images) as one union bank, 100 / 10 / 1 %
    n=$(ls "$TIRE/train/good" | wc -l)
    # (the references are all of them: seeds only move the coreset's first centre)
    SEEDS=1 run_eval "core100" "$TIRE" "$n" --coreset 1.0
    SEEDS=$CORESET_SEEDS run_eval "core10" "$TIRE" "$n" --coreset 0.1
    SEEDS=$CORESET_SEEDS run_eval "core1" "$TIRE" "$n" --coreset 0.01
    SEEDS=$CORESET_SEEDS run_eval "core1p32" "$TIRE" "$n" --coreset 0.01 --coreset-proj 32
    { stamp; table "Full-shot coreset, tire ($n references, size $SIZE)" core100 core10 core1 core1p32
      echo
      echo "| bank | fit s | bank MB | patches | predict ms/image (25 good test images) |"
      echo "|---|---|---|---|---|"
      for f in 1.0 0.1 0.01; do
          [ -z "${TABLES_ONLY:-}" ] || break
          b=$OUT/core_$f.pead
          t0=$(date +%s.%N)
          "$PATCHEAD" fit --quiet --model "$MODEL" --size "$SIZE" --threads "$THREADS" --coreset $f -o "$b" "$TIRE/train/good"
          t1=$(date +%s.%N)
          "$PATCHEAD" predict --no-maps --threads "$THREADS" --bank "$b" --out "$OUT/core_pred_$f" "$TIRE/test/good" 2> "$OUT/core_pred_$f.log"
          ms=$(sed -n 's/.*(\([0-9.]*\) ms\/image).*/\1/p' "$OUT/core_pred_$f.log")
          echo "| coreset $f | $(echo "$t1 - $t0" | bc) | $(du -m "$b" | cut -f1) | $(awk -v f=$f -v n=$n -v g=$(( (SIZE / 8) * (SIZE / 8) )) 'BEGIN { k = int(f * n * g + 0.5); print k }') | $ms |"
      done
      stamp
    } > "$OUT/coreset.md"
    ;;
threshold)
    # False alarms vs the target alpha, 4-shot banks. Per seed the 239 tire training images
    # are split (seeded shuffle) into 4 references, n calibration images and the rest; the
    # rest are normal images exchangeable with the calibration set ("held-out train"), the
    # 25 good test images are the deployment case (another acquisition batch).
    # Flagged at alpha <=> p-value <= alpha (the p_value column).
    [ -z "${TABLES_ONLY:-}" ] || continue
    flagged() { # CSV ALPHA -> "flagged total"
        awk -F, -v a="$2" 'NR > 1 { t++; if ($NF <= a + 1e-12) f++ } END { printf "%d %d", f, t }' "$1"
    }
    {
    stamp
    echo
    echo "| calibration | n | normals | flagged at alpha 0.01 | at 0.05 | at 0.1 | guarantee at 0.01 / 0.05 / 0.1 |"
    echo "|---|---|---|---|---|---|---|"
    for n in ${THR_SIZES:-loo 19 59 119}; do
        declare -A F=() TOT=()
        for seed in $(seq 0 $((SEEDS - 1))); do
            d=$OUT/thr_${n}_$seed
            rm -rf "$d"; mkdir -p "$d/refs" "$d/cal" "$d/rest"
            ls "$TIRE/train/good" | sort | awk -v s=$seed 'BEGIN { srand(1000 + s) } { print rand() "\t" $0 }' \
                | sort -k1,1 | cut -f2 > "$d/order"
            i=0
            while read -r f; do
                if [ $i -lt 4 ]; then dst=refs
                elif [ $n != loo ] && [ $i -lt $((4 + n)) ]; then dst=cal
                else dst=rest; fi
                ln -s "$TIRE/train/good/$f" "$d/$dst/$f"
                i=$((i + 1))
            done < "$d/order"
            if [ $n = loo ]; then opt=(--fpr 0.05); else opt=(--calibrate "$d/cal" --fpr 0.05); fi
            "$PATCHEAD" fit --quiet --model "$MODEL" --size "$SIZE" --threads "$THREADS" \
                "${opt[@]}" -o "$d/bank.pead" "$d/refs"
            for set in rest test; do
                src=$d/rest; [ $set = test ] && src=$TIRE/test/good
                "$PATCHEAD" predict --quiet --no-maps --threads "$THREADS" --bank "$d/bank.pead" \
                    --out "$d/$set" "$src"
                for a in 0.01 0.05 0.1; do
                    read -r f t <<< "$(flagged "$d/$set/scores.csv" $a)"
                    F[$set,$a]=$(( ${F[$set,$a]:-0} + f )); TOT[$set,$a]=$(( ${TOT[$set,$a]:-0} + t ))
                done
            done
        done
        for set in rest test; do
            label="held-out train"; [ $set = test ] && label="good test"
            nn=$n; [ $n = loo ] && nn=4
            g=$(awk -v n=$nn 'BEGIN { for (i = 1; i <= 3; i++) { a = (i == 1 ? 0.01 : i == 2 ? 0.05 : 0.1); x = (1 - a) * (n + 1) - 1e-9; k = int(x); if (k < x) k++; printf "%s%s", (i > 1 ? " / " : ""), (k <= n ? "yes" : "no") } }')
            echo "| $( [ $n = loo ] && echo leave-one-out || echo images ) | $nn | $label | $(awk -v f=${F[$set,0.01]} -v t=${TOT[$set,0.01]} 'BEGIN { printf "%d/%d = %.3f", f, t, f / t }') | $(awk -v f=${F[$set,0.05]} -v t=${TOT[$set,0.05]} 'BEGIN { printf "%d/%d = %.3f", f, t, f / t }') | $(awk -v f=${F[$set,0.1]} -v t=${TOT[$set,0.1]} 'BEGIN { printf "%d/%d = %.3f", f, t, f / t }') | $g |"
        done
        unset F TOT
    done
    # the paper's label-free threshold (leave-one-out maximum over the 4 references)
    for seed in $(seq 0 $((SEEDS - 1))); do
        "$PATCHEAD" fit --quiet --model "$MODEL" --size "$SIZE" --threads "$THREADS" -o "$OUT/thr_max_$seed.pead" "$OUT/thr_loo_$seed/refs"
        "$PATCHEAD" predict --quiet --no-maps --threads "$THREADS" --bank "$OUT/thr_max_$seed.pead" --out "$OUT/thr_max_$seed" "$TIRE/test/good"
        echo "leave-one-out maximum, seed $seed: $(awk -F, 'NR > 1 { t++; f += $3 } END { printf "%d/%d", f, t }' "$OUT/thr_max_$seed/scores.csv") good test images flagged"
    done
    } > "$OUT/threshold.md"
    ;;
*) echo "beyond.sh: unknown part '$part' (rotations window coreset threshold)" >&2; exit 2 ;;
esac
done
cat "$OUT"/*.md
