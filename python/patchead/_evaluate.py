"""evaluate(): `patchead eval` as a Python call, returning the dict of results.json.

Implemented here in Python over library calls (pe_dataset_open, the *_features scoring
API, pe_image_metrics_compute, pe_pixel_acc_*), following cli/eval.c step by step, rather
than moving the CLI's eval driver into the library: the driver is mostly file output
(tables, HTML report) that a Python caller does not want, and the numbers all come from
the library, so they are the CLI's numbers (tests/test_evaluate.py compares them).

Per category every test image and every needed training image is decoded and passed
through the backbone once; the features are reused by all presets, shots and seeds.
Aligned settings need pixels, so they go through fit / predict / zeroshot on images.
"""
import math
import resource
import time

import numpy as np

from . import _core
from ._errors import ArgumentError
from ._inputs import check_size

MASK = 0xFFFFFFFFFFFFFFFF
METRICS = ("i_auroc", "i_ap", "f1_max", "p_auroc", "pro")
MAP_SIGMA = 4.0  # eval's anomaly maps (pixel metrics)
PRO_MAX_FPR = 0.3


def reference_order(seed, category, n):
    """eval's order of a category's (path-sorted) training images for `seed`: the library's
    pe_sample_refs, the same rule as `patchead fit --shots N --seed S`; the first N are the
    N-shot references, for every N. (`category` is not part of the rule.)"""
    del category
    return _core.sample_refs(seed & MASK, n)


def _settings(presets, shots, zeroshot, ablation, align, mask, num_seeds, has_attn):
    out = []
    bases = list(shots) + ([0] if zeroshot else [])
    for preset in presets:
        for base in bases:
            for v in range(4 if ablation else 1):
                a = bool(v & 1) if ablation else align
                m = bool(v >> 1) if ablation else mask
                if m and not has_attn:
                    continue
                name = ("%d-shot" % base if base else "zero-shot") + (" +align" if a else "") + \
                    (" +mask" if m else "") + (" [%s]" % preset if len(presets) > 1 else "")
                out.append({"name": name, "shots": base, "align": a, "mask": m, "preset": preset,
                            "num_seeds": num_seeds if base else 1})
    return out


def _nan_none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _as_list(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    try:
        return list(value)
    except TypeError:
        return [value]


def evaluate(model, data_root, shots=None, seeds=3, zeroshot=False, preset="patchead",
             size=None, align=False, mask=False, ablation=False, layout=None, categories=None,
             max_test=None, pixel_bins=1 << 18):
    """Evaluate on a dataset (the CLI's `eval`) and return the dict of results.json,
    plus "scores": every image score as in scores.csv.

    shots: few-shot settings (int or list, e.g. [1, 2, 4]); seeds: seeds 0..seeds-1;
    zeroshot: also batch zero-shot; preset: name or list of names; size: input side
    (None = the model's size); align / mask / ablation: PatchEAD+ switches and the 2x2
    table; layout: dataset layout (None = detect); categories: names to keep;
    max_test: at most this many test images per category, evenly spaced; pixel_bins:
    histogram bins of the pixel metrics."""
    from . import Model  # the public class (avoid an import cycle)
    if not isinstance(model, Model):
        raise ArgumentError("model: expects a patchead.Model, got %s" % type(model).__name__)
    shot_list = [int(s) for s in _as_list(shots, "shots")]
    if any(s < 1 or s > 4096 for s in shot_list):
        raise ArgumentError("shots: each must be in 1..4096, got %r" % (shots,))
    if not shot_list and not zeroshot:
        raise ArgumentError("evaluate needs shots and/or zeroshot=True")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
        raise ArgumentError("seeds: expects an integer in 1..100, got %r" % (seeds,))
    if max_test is not None and (not isinstance(max_test, int) or max_test < 2):
        raise ArgumentError("max_test: expects an integer >= 2, got %r" % (max_test,))
    if not isinstance(pixel_bins, int) or not 16 <= pixel_bins <= 1 << 24:
        raise ArgumentError("pixel_bins: expects an integer in 16..%d, got %r" % (1 << 24, pixel_bins))
    presets = _as_list(preset, "preset")
    if not presets or len(presets) > 8:
        raise ArgumentError("preset: one to eight names, got %r" % (preset,))
    size = model.size if size is None else check_size(size)
    info = model.info
    if mask and not info["has_attention"]:
        raise ArgumentError("mask needs a ViT backbone with CLS attention; %s has none" % info["name"])

    t_start = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ds = _core.dataset_open(str(data_root), layout)
    cats = ds["categories"]
    keep = _as_list(categories, "categories")
    for name in keep:
        if name not in [c["name"] for c in cats]:
            raise ArgumentError("categories: %s not in %s (categories: %s)"
                                % (name, data_root, ", ".join(c["name"] for c in cats)))
    if keep:
        cats = [c for c in cats if c["name"] in keep]
    for c in cats:  # evenly spaced when capped
        total = len(c["test"])
        n = min(max_test, total) if max_test else total
        c["eval_test"] = [c["test"][k * total // n] for k in range(n)]

    settings = _settings(presets, shot_list, zeroshot, ablation, bool(align), bool(mask),
                         seeds, info["has_attention"])
    if not settings:
        raise ArgumentError("no setting left to run")
    need_attn = any(s["mask"] for s in settings)
    seed_list = list(range(seeds if shot_list else 1))
    cells = {}   # (setting, category, seed) -> metrics dict
    scores = []  # rows of scores.csv
    cat_out = []
    for ci, cat in enumerate(cats):
        extract_s = _run_category(model, size, need_attn, pixel_bins, cat, ci, settings,
                                  seed_list, cells, scores)
        cat_out.append({"name": cat["name"], "num_test": len(cat["eval_test"]),
                        "num_train": len(cat["train"]), "has_masks": cat["has_masks"],
                        "extract_seconds": extract_s})

    def seed_value(si, c, seed, key):
        if c >= 0:
            m = cells.get((si, c, seed))
            return m[key] if m else math.nan
        vals = [cells[(si, k, seed)][key] for k in range(len(cats)) if (si, k, seed) in cells]
        vals = [v for v in vals if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    out_settings = []
    for si, s in enumerate(settings):
        mean = {}
        for key in METRICS:  # mean +- population std over seeds of the category mean
            vals = [seed_value(si, -1, seed, key) for seed in range(s["num_seeds"])]
            vals = [v for v in vals if not math.isnan(v)]
            mu = sum(vals) / len(vals) if vals else math.nan
            sd = math.sqrt(max(0.0, sum(v * v for v in vals) / len(vals) - mu * mu)) if vals else math.nan
            mean[key] = {"mean": _nan_none(mu), "std": _nan_none(sd)}
        results, seconds = [], 0.0
        for c in range(len(cats)):
            for seed in range(s["num_seeds"]):
                m = cells.get((si, c, seed))
                if not m:
                    continue
                seconds += m["seconds"]
                row = {"category": cats[c]["name"], "seed": seed_list[seed]}
                row.update({k: _nan_none(m[k]) for k in METRICS + ("p_auroc_bound", "pro_bound")})
                row["seconds"] = m["seconds"]
                results.append(row)
        out_settings.append({"name": s["name"], "mode": "few-shot" if s["shots"] else "zero-shot",
                             "shots": s["shots"], "align": s["align"], "mask": s["mask"],
                             "preset": s["preset"], "seconds": seconds, "mean": mean,
                             "results": results})
    return {
        "patchead_version": _core.version,
        "git_commit": "",
        "started": started,
        "backbone": {"name": info["name"], "family": info["family"],
                     "weights_hash": info["weights_hash"], "path": model.path},
        "parameters": {"data": str(data_root), "layout": ds["layout"], "size": size,
                       "map_sigma": MAP_SIGMA, "threads": _core.get_threads(),
                       "max_test": max_test or 0, "pixel_bins": pixel_bins,
                       "pro_max_fpr": PRO_MAX_FPR},
        "seeds": seed_list,
        "categories": cat_out,
        "settings": out_settings,
        "timings": {"total_seconds": time.monotonic() - t_start,
                    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0},
        "scores": scores,
    }


def _features(raw):
    """extract()'s tuple with float32 arrays in place of the raw bytes."""
    data, gh, gw, dim, attn = raw
    return (np.frombuffer(data, np.float32), gh, gw, dim,
            None if attn is None else np.frombuffer(attn, np.float32))


def _detect(setting, size):
    return {"zeroshot": int(setting["shots"] == 0), "preset": setting["preset"], "size": size,
            "align": int(setting["align"]), "mask": int(setting["mask"])}


def _run_category(model, size, need_attn, bins, cat, ci, settings, seed_list, cells, scores):
    """Extract once, then score every (setting, seed) cell of one category."""
    test = cat["eval_test"]
    train = cat["train"]
    max_shots = max(s["shots"] for s in settings)
    few_ok = 0 < max_shots <= len(train)
    need_train = any(s["shots"] and not s["align"] for s in settings)
    perms = [reference_order(seed, cat["name"], len(train)) for seed in seed_list] if few_ok else []
    needed = sorted({p[k] for p in perms for k in range(max_shots)}) if need_train else []

    t0 = time.monotonic()
    sizes = []
    test_feats = []
    for path, _, _, _ in test:
        rgb, w, h = _core.load_image(path)
        img = np.frombuffer(rgb, np.uint8).reshape(h, w, 3)
        test_feats.append(_features(model._core.extract(img, size=size, attn=need_attn)))
        sizes.append((w, h))
    train_feats = {k: _features(model._core.extract(train[k][0], size=size, attn=need_attn))
                   for k in needed}
    extract_s = time.monotonic() - t0

    for si, s in enumerate(settings):
        if s["shots"] and not few_ok:
            continue
        for seed in range(s["num_seeds"]):
            t1 = time.monotonic()
            params = _detect(s, size)
            if s["shots"] == 0 and not s["align"]:
                res = _core.zeroshot_features(test_feats, sizes, params)
            elif s["shots"] == 0:
                res = _core.zeroshot(model._core, [t[0] for t in test], params)
            else:
                refs = perms[seed][:s["shots"]]
                if not s["align"]:
                    bank = _core.bank_fit_features(model._core, [train_feats[k] for k in refs], params)
                    res = [bank.predict_features(f, w, h) for f, (w, h) in zip(test_feats, sizes)]
                else:
                    bank = _core.bank_fit(model._core, [train[k][0] for k in refs],
                                          [train[k][0] for k in refs], params)
                    res = [bank.predict(model._core, t[0]) for t in test]
            m = _cell_metrics(cat, test, res, bins)
            m["seconds"] = time.monotonic() - t1
            cells[(si, ci, seed)] = m
            for (path, _, _, label), r in zip(test, res):
                scores.append({"setting": s["name"], "category": cat["name"],
                               "seed": seed_list[seed], "path": path, "label": label,
                               "score": r[0]})
    return extract_s


def _cell_metrics(cat, test, res, bins):
    """Image metrics of one cell and, with masks, pixel AUROC / PRO streamed through the
    library's histogram accumulator (maps at each image's size, sigma 4)."""
    scores = np.array([r[0] for r in res], np.float32)
    labels = np.array([t[3] for t in test], np.uint8)
    im = _core.image_metrics(scores, labels)
    m = {"i_auroc": im["auroc"], "i_ap": im["ap"], "f1_max": im["f1_max"], "p_auroc": math.nan,
         "pro": math.nan, "p_auroc_bound": math.nan, "pro_bound": math.nan}
    if not cat["has_masks"]:
        return m
    patches = [np.frombuffer(r[3], np.float32) for r in res]
    lo = float(min(p.min() for p in patches))
    hi = float(max(p.max() for p in patches))
    acc = _core.PixelAcc(lo, hi, bins)
    for (path, mask_path, _, label), r in zip(test, res):
        _, gh, gw, pbuf, _, _, w, h = r
        mask = None
        if label:
            mask, mw, mh = _core.mask_load(mask_path)
            if (mw, mh) != (w, h):
                raise ArgumentError("%s: mask is %dx%d but the image is %dx%d" % (mask_path, mw, mh, w, h))
        amap = _core.result_map(np.frombuffer(pbuf, np.float32), gh, gw, w, h, MAP_SIGMA)
        acc.add(np.frombuffer(amap, np.float32), mask, w, h)
    pm = acc.result(PRO_MAX_FPR)
    m.update({"p_auroc": pm["auroc"], "pro": pm["pro"], "p_auroc_bound": pm["auroc_bound"],
              "pro_bound": pm["pro_bound"]})
    return m
