#!/usr/bin/env bash
# cli_sampling.sh — one seeded reference sampler (pe_sample_refs) for fit and eval:
# `fit --shots N --seed S` + `predict` reproduce eval's per-image scores of N-shot, seed S,
# on the bundled tire examples (examples/tire: MVTec layout, 3 normal training images,
# 4 test images) with the real MobileNetV2 weights (SKIP without them).
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
MODEL=weights/mobilenet_v2
EX=examples/tire
[ -x "$PATCHEAD" ] || { echo "FAIL cli_sampling: $PATCHEAD not built"; exit 1; }
if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "SKIP cli_sampling: $MODEL absent (make weights)"
    exit 0
fi
T=$(mktemp -d /tmp/pe_cli_sampling.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
common=(--model "$MODEL" --size 224 --threads 1 --quiet)
SEEDS=3

# eval: 1-shot and 2-shot, seeds 0..2 (scores.csv: setting,category,seed,path,label,score)
if ! timeout 300 "$PATCHEAD" eval "${common[@]}" --data "$EX" --shots 1,2 --seeds $SEEDS \
    --out "$T/eval" >"$T/eval.log" 2>&1; then
    fail eval_runs "$(tail -1 "$T/eval.log")"
    exit 0
fi
for shots in 1 2; do
    why="" distinct=""
    for ((seed = 0; seed < SEEDS; seed++)); do
        bank=$T/b$shots.$seed.pead
        if ! timeout 120 "$PATCHEAD" fit "${common[@]}" --shots $shots --seed $seed -o "$bank" \
            "$EX/train/good" >"$T/fit.log" 2>&1 ||
            ! timeout 120 "$PATCHEAD" predict --bank "$bank" --threads 1 --quiet --no-maps \
                --out "$T/p$shots.$seed" "$EX/test" >"$T/predict.log" 2>&1; then
            why="$why seed $seed: fit/predict failed ($(tail -1 "$T/fit.log" "$T/predict.log" | tr '\n' ' '))"
            continue
        fi
        # path -> score from both; same paths, |difference| <= 1e-6 (scores.csv has 7 digits)
        got=$(awk -F, -v s="$shots-shot" -v seed=$seed '
            FNR == 1 { next }
            FILENAME ~ /eval/ { if ($1 == s && $3 == seed) e[$4] = $6; next }
            { p[$1] = $2 }
            END { n = 0; bad = 0
                  for (k in e) { n++; if (!(k in p)) { bad++; continue }
                                 d = e[k] - p[k]; if (d < 0) d = -d; if (d > 1e-6) bad++ }
                  for (k in p) if (!(k in e)) bad++
                  printf "%d %d", n, bad }' "$T/eval/scores.csv" "$T/p$shots.$seed/scores.csv")
        [ "$got" = "4 0" ] || why="$why seed $seed: (rows, mismatches) = ($got)"
        distinct="$distinct $(cut -d, -f2 "$T/p$shots.$seed/scores.csv" | tail -n +2 | tr '\n' ' ')|"
    done
    [ -z "$why" ] && pass "fit_predict_reproduce_eval_${shots}shot" ||
        fail "fit_predict_reproduce_eval_${shots}shot" "$why"
    # the seed matters: 3 seeds over 3 training images give at least two different banks
    n=$(tr '|' '\n' <<<"$distinct" | sed '/^ *$/d' | sort -u | wc -l)
    [ "$n" -ge 2 ] && pass "seeds_pick_different_refs_${shots}shot" ||
        fail "seeds_pick_different_refs_${shots}shot" "all $SEEDS seeds gave the same scores"
done
