#!/usr/bin/env bash
# cli_eval_allshot.sh — `eval --shots all` (docs/BEYOND.md, "All-shot rows"): a row "all-shot"
# whose bank is every training image of the category, reproducible with fit --shots all +
# predict. Part 1 (bundled examples/tire, always runs with the weights): the row exists in
# results.md / .csv / .json and scores.csv with shots = the train count, and its per-image
# scores equal fit --shots all + predict. Part 2 (PATCHEAD_DATA's tire, 224 px): with
# --coreset 0.1 and seeds 0,1, each seed's per-image scores and I-AUROC equal fit --shots all
# --coreset 0.1 --seed S + predict. The train set is the first 60 train/good images (a folder
# of links in the MVTec layout): the greedy coreset over all 239 images takes ~80 s per fit
# on 2 cores (measured on the full set: eval's row equals fit + predict there too, largest
# score difference 3.6e-8, the print precision).
. "$(dirname "$0")/lib_cli.sh"
MODEL=weights/mobilenet_v2
if [ ! -e "$MODEL/model.safetensors" ]; then echo "SKIP cli_eval_allshot: $MODEL absent (make weights)"; exit 0; fi
PY=/usr/bin/python3

# same_scores EVAL_DIR SEED PREDICT_DIR: every per-image score of eval's all-shot row (seed
# SEED) equals predict's (to 1e-6 relative: eval prints 9 digits, predict 7), same paths, and
# eval's I-AUROC equals the one computed from predict's scores and eval's labels
same_scores() {
    $PY - "$@" <<'EOF'
import csv, json, sys
ev, seed, pr = sys.argv[1], sys.argv[2], sys.argv[3]
e = [r for r in csv.DictReader(open(ev + '/scores.csv')) if r['setting'] == 'all-shot' and r['seed'] == seed]
p = {r['path']: float(r['score']) for r in csv.DictReader(open(pr + '/scores.csv'))}
assert e and len(e) == len(p), (len(e), len(p))
for r in e:
    s, q = float(r['score']), p[r['path']]
    assert abs(s - q) <= 1e-6 * max(1, abs(q)), (r['path'], s, q)
pos = [p[r['path']] for r in e if r['label'] == '1']
neg = [p[r['path']] for r in e if r['label'] == '0']
auroc = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
row = [r for r in csv.DictReader(open(ev + '/results.csv')) if r['setting'] == 'all-shot' and r['seed'] == seed and r['category'] != 'mean']
assert abs(float(row[0]['i_auroc']) - auroc) < 1e-6, (row[0]['i_auroc'], auroc)
EOF
}

# ---- part 1: the bundled examples (3 train images, 4 test)
EX=examples/tire
timeout 120 "$PATCHEAD" eval --quiet --model "$MODEL" --size 224 --data "$EX" --shots 1,all --seeds 2 \
    --out "$T/ev" >/dev/null 2>"$T/err"
check allshot_eval_runs test $? -eq 0
check allshot_md_row grep -q '^| all-shot |' "$T/ev/results.md"
check allshot_md_section grep -q '^## all-shot (preset patchead)$' "$T/ev/results.md"
# one seed without a coreset (the references do not depend on it), the train count as shots
check allshot_csv_rows test "$(grep -c '^all-shot,' "$T/ev/results.csv")" -eq 2
check allshot_csv_shots grep -q '^all-shot,tire,0,3,0,0,patchead,' "$T/ev/results.csv"
check allshot_csv_mean grep -q '^all-shot,mean,0,all,0,0,patchead,' "$T/ev/results.csv"
check allshot_json $PY -c "
import json, sys
j = json.load(open(sys.argv[1]))
s = [x for x in j['settings'] if x['name'] == 'all-shot'][0]
sys.exit(not (s['mode'] == 'all-shot' and s['shots'] == 'all' and len(s['results']) == 1
              and s['results'][0]['shots'] == 3 and s['results'][0]['seed'] == 0))" "$T/ev/results.json"
check allshot_scores_rows test "$(grep -c '^all-shot,tire,0,' "$T/ev/scores.csv")" -eq 4
timeout 120 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots all -o "$T/ex.pead" "$EX/train/good" 2>"$T/err" &&
    timeout 120 "$PATCHEAD" predict --quiet --no-maps --bank "$T/ex.pead" --out "$T/exp" "$EX/test" 2>"$T/err"
check allshot_fit_predict_runs test $? -eq 0
check allshot_equals_fit_predict same_scores "$T/ev" 0 "$T/exp"
expect_error allshot_twice 2 "'all' given twice" "$PATCHEAD" eval --model "$MODEL" --data "$EX" --shots all,1,all

# ---- part 2: tire with a coreset, two seeds
TIRE=${PATCHEAD_DATA:-}/mvtec3d_tire
if [ -z "${PATCHEAD_DATA:-}" ] || [ ! -d "$TIRE/train/good" ]; then
    echo "SKIP cli_eval_allshot (tire part): PATCHEAD_DATA (with mvtec3d_tire) not set"
    exit 0
fi
TIRE=$(cd "$TIRE" && pwd)
DS=$T/tire
mkdir -p "$DS/train/good"
for f in $(ls "$TIRE/train/good" | head -60); do ln -s "$TIRE/train/good/$f" "$DS/train/good/$f"; done
ln -s "$TIRE/test" "$DS/test"
ln -s "$TIRE/ground_truth" "$DS/ground_truth"
check allshot_tire_subset test "$(ls "$DS/train/good" | wc -l)" -eq 60
timeout 300 "$PATCHEAD" eval --quiet --model "$MODEL" --size 224 --data "$DS" --shots all --coreset 0.1 \
    --seeds 2 --out "$T/tev" >/dev/null 2>"$T/err"
check allshot_tire_eval_runs test $? -eq 0
# with a coreset the seed picks the first centre: one row per seed
check allshot_tire_rows test "$(grep -c '^all-shot,tire,[01],60,' "$T/tev/results.csv")" -eq 2
for seed in 0 1; do
    timeout 300 "$PATCHEAD" fit --quiet --model "$MODEL" --size 224 --shots all --coreset 0.1 --seed $seed \
        -o "$T/t$seed.pead" "$DS/train/good" 2>"$T/err" &&
        timeout 300 "$PATCHEAD" predict --quiet --no-maps --bank "$T/t$seed.pead" --out "$T/tp$seed" "$DS/test" 2>"$T/err"
    check allshot_tire_fit_predict_seed$seed test $? -eq 0
    check allshot_tire_equals_fit_predict_seed$seed same_scores "$T/tev" $seed "$T/tp$seed"
done
check allshot_tire_seeds_differ sh -c "! cmp -s '$T/tp0/scores.csv' '$T/tp1/scores.csv'"
