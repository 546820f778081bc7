#!/usr/bin/env bash
# cli_eval.sh — `patchead eval` end to end on a tiny MVTec-layout dataset built in /tmp
# from the MVTec AD leather subset under $PATCHEAD_DATA (real images, CC BY-NC-SA, © MVTec)
# with the real MobileNetV2 weights. SKIPs when PATCHEAD_DATA is unset or the weights are
# absent; fails when PATCHEAD_DATA is set but lacks the subset. One PASS/FAIL line per check.
set -u
PATCHEAD=${PATCHEAD:-build/patchead}
WEIGHTS=weights/mobilenet_v2
if [ ! -x "$PATCHEAD" ]; then echo "FAIL cli_eval: $PATCHEAD not built"; exit 1; fi
if [ -z "${PATCHEAD_DATA:-}" ] || [ ! -f "$WEIGHTS/model.safetensors" ]; then
    echo "SKIP cli_eval: needs PATCHEAD_DATA (with mvtec_leather_subset/) and $WEIGHTS (make weights)"
    exit 0
fi
if [ ! -d "$PATCHEAD_DATA/mvtec_leather_subset" ]; then
    echo "FAIL cli_eval: PATCHEAD_DATA=$PATCHEAD_DATA has no mvtec_leather_subset/"
    exit 1
fi
DATA=$(cd "$PATCHEAD_DATA/mvtec_leather_subset" && pwd)

tmp=$(mktemp -d /tmp/pe_cli_eval.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# leather/: 2 train, test = 2 good + 2 cut + 1 color (5), masks for the anomalies
ds=$tmp/leather
mkdir -p "$ds/train/good" "$ds/test/good" "$ds/test/cut" "$ds/test/color" \
         "$ds/ground_truth/cut" "$ds/ground_truth/color"
ln -s "$DATA/train/good/000.jpg" "$ds/train/good/000.jpg"
ln -s "$DATA/train/good/001.jpg" "$ds/train/good/001.jpg"
ln -s "$DATA/test/good/000.jpg" "$ds/test/good/000.jpg"
ln -s "$DATA/test/good/001.jpg" "$ds/test/good/001.jpg"
for s in 000 001; do
    ln -s "$DATA/test/cut/$s.jpg" "$ds/test/cut/$s.jpg"
    ln -s "$DATA/ground_truth/cut/${s}_mask.png" "$ds/ground_truth/cut/${s}_mask.png"
done
ln -s "$DATA/test/color/000.jpg" "$ds/test/color/000.jpg"
ln -s "$DATA/ground_truth/color/000_mask.png" "$ds/ground_truth/color/000_mask.png"
NTEST=5
common=(--model "$WEIGHTS" --size 224 --pixel-bins 65536 --threads 1 --quiet)

# 1. few-shot (2 settings x 2 seeds) and batch zero-shot (1 run) in one eval
out=$tmp/fs
if "$PATCHEAD" eval "${common[@]}" --data "$ds" --shots 1,2 --seeds 2 --zeroshot --out "$out" >"$tmp/fs.log" 2>&1; then
    pass eval_fewshot_runs
else
    fail eval_fewshot_runs "exit $? ($(tail -1 "$tmp/fs.log"))"
fi
missing=""
for f in results.md results.csv results.json scores.csv report.html; do
    [ -s "$out/$f" ] || missing="$missing $f"
done
ls "$out"/heatmaps/*.png >/dev/null 2>&1 || missing="$missing heatmaps/*.png"
[ -z "$missing" ] && pass eval_files_written || fail eval_files_written "missing:$missing"

rows=$(($(wc -l <"$out/scores.csv") - 1))
[ "$rows" -eq $(((2 * 2 + 1) * NTEST)) ] && pass eval_scores_rows ||
    fail eval_scores_rows "scores.csv has $rows rows, expected $(((2 * 2 + 1) * NTEST)) (settings x seeds x test images)"
zrows=$(grep -c '^zero-shot,' "$out/scores.csv")
[ "$zrows" -eq $NTEST ] && grep -q '^## zero-shot' "$out/results.md" && pass eval_zeroshot ||
    fail eval_zeroshot "$zrows zero-shot rows in scores.csv, expected $NTEST"

# every metric of every per-seed row is defined and within [0, 1]
bad=$(awk -F, 'NR > 1 && $2 != "mean" { for (i = 8; i <= 12; i++) if ($i == "" || $i < 0 || $i > 1) print NR ": col " i " = " $i }' "$out/results.csv")
nres=$(awk -F, 'NR > 1 && $2 != "mean"' "$out/results.csv" | wc -l)
[ -z "$bad" ] && [ "$nres" -eq 5 ] && pass eval_metrics_in_range ||
    fail eval_metrics_in_range "${bad:-$nres per-seed rows, expected 5}"

# I-AUROC recomputed from scores.csv (pairs, ties = 1/2) equals results.csv's
check=$(awk -F, '
    FNR == 1 { next }
    FILENAME ~ /scores/ { k = $1 SUBSEP $3; n[k]++; s[k, n[k]] = $6; y[k, n[k]] = $5; next }
    $2 != "mean" { want[$1 SUBSEP $3] = $8 }
    END {
        bad = 0
        for (k in n) {
            num = 0; P = 0; N = 0
            for (i = 1; i <= n[k]; i++) { if (y[k, i] == 1) P++; else N++ }
            for (i = 1; i <= n[k]; i++) for (j = 1; j <= n[k]; j++)
                if (y[k, i] == 1 && y[k, j] == 0) num += (s[k, i] > s[k, j]) + 0.5 * (s[k, i] == s[k, j])
            d = num / (P * N) - want[k]; if (d < 0) d = -d
            if (d > 1e-6) { bad = 1; print "group " k ": " num / (P * N) " vs " want[k] }
        }
        if (!bad) print "ok"
    }' "$out/scores.csv" "$out/results.csv")
[ "$check" = ok ] && pass eval_auroc_recomputed || fail eval_auroc_recomputed "$check"

grep -q '"weights_hash"' "$out/results.json" && grep -qE '"seeds":[[:space:]]*\[0,[[:space:]]*1\]' "$out/results.json" &&
    grep -q '"p_auroc"' "$out/results.json" && pass eval_json_provenance ||
    fail eval_json_provenance "results.json lacks weights_hash / seeds / metrics"

h=$out/report.html
# text between tags only (base64 payloads may contain the letters "nan")
if grep -q '<svg' "$h" && grep -q 'data:image/png;base64,iVBOR' "$h" &&
    ! grep -oE '>[^<]*<' "$h" | grep -qiw 'nan' &&
    ! grep -q 'src="heatmaps/' "$h"; then
    pass eval_report_self_contained
else
    fail eval_report_self_contained "report.html lacks inline SVG / embedded PNG, or shows NaN"
fi
grep -q '^## 1-shot' "$out/results.md" && grep -q '^## 2-shot' "$out/results.md" &&
    grep -q '\*\*mean\*\*' "$out/results.md" && pass eval_markdown_tables ||
    fail eval_markdown_tables "results.md lacks the per-setting tables"

# reference sampling is reproducible: the 1-shot rows of a 1-shot-only run match
"$PATCHEAD" eval "${common[@]}" --data "$ds" --shots 1 --seeds 2 --out "$tmp/again" >/dev/null 2>&1
if [ -s "$tmp/again/scores.csv" ] &&
    cmp -s <(grep '^1-shot,' "$out/scores.csv") <(grep '^1-shot,' "$tmp/again/scores.csv"); then
    pass eval_seeds_reproducible
else
    fail eval_seeds_reproducible "1-shot scores differ between two runs with the same seeds"
fi

# 2. masks missing: pixel metrics n/a, image metrics still there, no crash
nomask=$tmp/nomask
cp -r "$ds" "$nomask" && rm -rf "$nomask/ground_truth"
if "$PATCHEAD" eval "${common[@]}" --data "$nomask" --shots 1 --seeds 1 --out "$tmp/nm" >"$tmp/nm.log" 2>&1 &&
    grep -q '| nomask | 5 (3) | [0-9.]* | [0-9.]* | [0-9.]* | n/a | n/a |' "$tmp/nm/results.md"; then
    pass eval_missing_masks_na
else
    fail eval_missing_masks_na "$(tail -1 "$tmp/nm.log"; grep nomask "$tmp/nm/results.md")"
fi

# 3. bad input: clear one-line errors, no output folder left behind
"$PATCHEAD" eval --model "$WEIGHTS" --shots 1 >/dev/null 2>"$tmp/e1"; rc=$?
[ $rc -eq 2 ] && grep -q 'needs --model and --data' "$tmp/e1" && pass eval_usage_error ||
    fail eval_usage_error "exit $rc: $(cat "$tmp/e1")"
"$PATCHEAD" eval "${common[@]}" --data "$ds" --layout visa --shots 1 --out "$tmp/e2out" >/dev/null 2>"$tmp/e2"; rc=$?
[ $rc -eq 1 ] && grep -q '1cls.csv' "$tmp/e2" && [ ! -e "$tmp/e2out" ] && pass eval_wrong_layout ||
    fail eval_wrong_layout "exit $rc: $(cat "$tmp/e2")"
"$PATCHEAD" eval "${common[@]}" --data "$ds" --category bottle --shots 1 --out "$tmp/e3out" >/dev/null 2>"$tmp/e3"; rc=$?
[ $rc -eq 1 ] && grep -q 'categories: leather' "$tmp/e3" && pass eval_unknown_category ||
    fail eval_unknown_category "exit $rc: $(cat "$tmp/e3")"
"$PATCHEAD" eval "${common[@]}" --data "$ds" --mask --shots 1 --out "$tmp/e4out" >/dev/null 2>"$tmp/e4"; rc=$?
[ $rc -eq 1 ] && grep -q 'needs a ViT' "$tmp/e4" && pass eval_mask_needs_vit ||
    fail eval_mask_needs_vit "exit $rc: $(cat "$tmp/e4")"

# 4. one commit point: an eval that cannot write (file size limit: the same error path as a
# full disk) publishes nothing and leaves the previous results folder exactly as it was
cp -a "$tmp/again" "$tmp/again.before"
(trap '' XFSZ; ulimit -f 4; exec timeout 300 "$PATCHEAD" eval "${common[@]}" --data "$ds" --shots 1 --seeds 1 --out "$tmp/again") \
    >/dev/null 2>"$tmp/e5"; rc=$?
[ $rc -eq 1 ] && grep -q 'File too large' "$tmp/e5" && grep -q 'results not published' "$tmp/e5" &&
    diff -r "$tmp/again" "$tmp/again.before" >/dev/null && pass eval_failed_run_keeps_previous ||
    fail eval_failed_run_keeps_previous "exit $rc: $(head -c 300 "$tmp/e5")"
exit 0
