#!/usr/bin/env python3
"""Reference implementations of patchead's evaluation metrics (developer tool; never
needed at run time or by `make test`).

- image AUROC / AP: scikit-learn roc_auc_score / average_precision_score;
- F1-max: max over sklearn precision_recall_curve points of 2PR/(P+R);
- pixel AUROC: roc_auc_score over all pixels of all images;
- PRO: the MVTec AD definition, written here with numpy/scipy: regions are the
  connected components of each ground-truth mask with scipy.ndimage.label and the
  3x3 all-ones structure (8-connectivity), as MVTec's evaluation code uses; FPR counts
  every pixel outside all regions over all images; after each distinct score the
  (FPR, PRO) point is kept; the curve from (0, 0) is integrated with the trapezoid rule
  up to max_fpr (interpolating at max_fpr) and divided by max_fpr. Computed in float64
  (MVTec casts the FPRs to float32; that changes results by ~1e-7).

One class only (no positives or no negatives) -> NaN for every image metric (sklearn
raises or warns there); no regions or no normal pixels -> NaN PRO.

Also usable as a command: `metrics_ref.py scores.csv` recomputes image metrics from an
eval run's scores.csv, per (setting, category, seed).
"""
import csv
import sys
from collections import defaultdict

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

NAN = float("nan")


def image_metrics(scores, labels):
    """(auroc, ap, f1_max) of float32 scores vs 0/1 labels."""
    scores = np.asarray(scores, dtype=np.float32).astype(np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() == labels.max():
        return NAN, NAN, NAN
    auroc = roc_auc_score(labels, scores)
    ap = average_precision_score(labels, scores)
    prec, rec, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    return float(auroc), float(ap), float(f1.max())


def regions_8(mask):
    """8-connected components of a binary mask: (labels, count)."""
    return ndimage.label(np.asarray(mask) != 0, structure=np.ones((3, 3), dtype=int))


def pixel_auroc(maps, masks):
    s = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps]).astype(np.float64)
    y = np.concatenate([(np.asarray(m) != 0).ravel() for m in masks]).astype(np.int64)
    if y.min() == y.max():
        return NAN
    return float(roc_auc_score(y, s))


def pro_curve(maps, masks):
    """(fprs, pros) of the MVTec AD PRO curve, starting with (0, 0) and ending at (1, 1)."""
    scores, fp_change, pro_change = [], [], []
    num_ok, num_regions = 0, 0
    for amap, mask in zip(maps, masks):
        labeled, n = regions_8(mask)
        ok = labeled == 0
        num_ok += int(ok.sum())
        num_regions += n
        pro = np.zeros(labeled.shape, dtype=np.float64)
        for k in range(1, n + 1):
            region = labeled == k
            pro[region] = 1.0 / region.sum()
        scores.append(np.asarray(amap, dtype=np.float32).astype(np.float64).ravel())
        fp_change.append(ok.ravel().astype(np.float64))
        pro_change.append(pro.ravel())
    if num_ok == 0 or num_regions == 0:
        return None, None
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="stable")
    s = s[order]
    fprs = np.cumsum(np.concatenate(fp_change)[order]) / num_ok
    pros = np.cumsum(np.concatenate(pro_change)[order]) / num_regions
    keep = np.append(np.diff(s) != 0, True)  # last point of each tie group
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def trapezoid_to(x, y, x_max):
    """Area under the polyline (x, y) for x in [0, x_max], interpolating at x_max."""
    area = 0.0
    for i in range(1, len(x)):
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        if x1 <= x_max:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            if x0 < x_max:
                ym = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
                area += 0.5 * (y0 + ym) * (x_max - x0)
            break
    return area


def pro_score(maps, masks, max_fpr=0.3):
    fprs, pros = pro_curve(maps, masks)
    if fprs is None:
        return NAN
    return trapezoid_to(fprs, pros, max_fpr) / max_fpr


def pro_score_bruteforce(maps, masks, max_fpr=0.3):
    """Independent check of pro_score: for every distinct threshold t, the mean over
    regions of |region & (score >= t)| / |region|, and the FPR, computed directly."""
    s_all = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps]).astype(np.float64)
    regions = []
    ok_scores = []
    for amap, mask in zip(maps, masks):
        labeled, n = regions_8(mask)
        a = np.asarray(amap, np.float32).astype(np.float64)
        ok_scores.append(a[labeled == 0])
        for k in range(1, n + 1):
            regions.append(a[labeled == k])
    ok_scores = np.concatenate(ok_scores)
    if len(ok_scores) == 0 or not regions:
        return NAN
    xs, ys = [0.0], [0.0]
    for t in np.unique(s_all)[::-1]:
        xs.append(float((ok_scores >= t).mean()))
        ys.append(float(np.mean([(r >= t).mean() for r in regions])))
    xs.append(1.0)
    ys.append(1.0)
    return trapezoid_to(xs, ys, max_fpr) / max_fpr


def _recompute_scores_csv(path):
    groups = defaultdict(lambda: ([], []))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["setting"], row["category"], row["seed"])
            groups[key][0].append(float(row["score"]))
            groups[key][1].append(int(row["label"]))
    print("setting,category,seed,i_auroc,i_ap,f1_max")
    for key, (s, y) in sorted(groups.items()):
        a, p, f = image_metrics(s, y)
        print(",".join(key) + ",%.6f,%.6f,%.6f" % (a, p, f))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: metrics_ref.py RESULTS_DIR/scores.csv")
    _recompute_scores_csv(sys.argv[1])
