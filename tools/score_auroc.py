#!/usr/bin/env python3
"""I-AUROC table from bench/score_bench.c's score CSV (columns config,path,label,score).
Few-shot configs "<name>_seed<k>" are grouped into mean +- std over seeds.
Run: python3 tools/score_auroc.py scores.csv"""
import collections
import csv
import re
import sys

import numpy as np
from sklearn.metrics import roc_auc_score


def main(path):
    rows = collections.defaultdict(lambda: ([], []))
    for r in csv.DictReader(open(path)):
        y, s = rows[r["config"]]
        y.append(int(r["label"]))
        s.append(float(r["score"]))
    groups = collections.OrderedDict()
    for cfg, (y, s) in rows.items():
        auc = 100 * roc_auc_score(y, s)
        groups.setdefault(re.sub(r"_seed\d+$", "", cfg), []).append(auc)
    print("| setting | I-AUROC (%) | n |")
    print("|---|---|---|")
    for g, v in groups.items():
        txt = "%.1f" % v[0] if len(v) == 1 else "%.1f ± %.1f" % (np.mean(v), np.std(v))
        print("| %s | %s | %d |" % (g, txt, len(rows[next(c for c in rows if c.startswith(g))][0])))


if __name__ == "__main__":
    main(sys.argv[1])
