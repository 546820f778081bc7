#!/usr/bin/env python3
"""Reference fixtures for src/score/score.c and src/score/anomaly_map.c (tests/fixtures/score/).

Anomaly maps: torch.nn.functional.interpolate(mode="bilinear", align_corners=False)
followed by scipy.ndimage.gaussian_filter(sigma) with its defaults (mode="reflect",
truncate=4.0) -- AnomalyDINO's recipe.
Scoring: Eq. 1-4 of docs/METHOD.md written directly in NumPy (float64) for a few-shot
query and a zero-shot batch.

Every file is little-endian: int32 header fields then float32 arrays (layouts below).
Run: python3 tools/make_score_fixtures.py   (writes tests/fixtures/score/*.bin)
"""
import os
import struct

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "score")


def f32(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def write(name, header_ints, header_floats, *arrays):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(struct.pack("<%di" % len(header_ints), *header_ints))
        f.write(struct.pack("<%df" % len(header_floats), *header_floats))
        for a in arrays:
            f.write(f32(a))


def anomaly_map(grid, out_w, out_h, sigma):
    t = torch.from_numpy(grid.astype(np.float32))[None, None]
    up = F.interpolate(t, size=(out_h, out_w), mode="bilinear", align_corners=False)[0, 0].numpy()
    if sigma > 0:
        up = scipy.ndimage.gaussian_filter(up.astype(np.float64), sigma=sigma)
    return up


def cos_dist(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def patch_scores(s, order, k):
    # s: (G, M) per-reference distances -> mean of the K lowest / highest per row
    srt = np.sort(s, axis=1)
    sel = srt[:, :k] if order == 0 else srt[:, -k:]
    return sel.mean(axis=1)


def image_score(a, top):
    return np.sort(a)[::-1][:top].mean()


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1234)

    # map_<i>.bin: int32 gh, gw, out_w, out_h; float32 sigma; grid (gh, gw); map (out_h, out_w)
    cases = [(5, 7, 37, 23, 4.0), (4, 4, 50, 40, 1.5), (2, 3, 10, 7, 4.0), (6, 6, 6, 6, 0.0),
             (8, 6, 5, 9, 2.0)]
    for i, (gh, gw, ow, oh, sigma) in enumerate(cases):
        grid = rng.random((gh, gw)).astype(np.float32)
        write("map_%d.bin" % i, [gh, gw, ow, oh], [sigma], grid, anomaly_map(grid, ow, oh, sigma))

    # fewshot.bin: int32 D, Gq, M, G_1..G_M; query (Gq, D); refs; then for (order, K) in
    # (0,1),(0,2),(1,2),(1,3): patch scores (Gq) and the image score (top 3) as float32
    D, Gq, Gs = 16, 23, [9, 17, 30]
    q = rng.standard_normal((Gq, D)).astype(np.float32)
    refs = [rng.standard_normal((g, D)).astype(np.float32) for g in Gs]
    s = np.stack([cos_dist(q.astype(np.float64), r.astype(np.float64)).min(axis=1) for r in refs], 1)
    outs = []
    for order, k in [(0, 1), (0, 2), (1, 2), (1, 3)]:
        a = patch_scores(s, order, k)
        outs += [a, np.array([image_score(a, 3)])]
    write("fewshot.bin", [D, Gq, len(Gs)] + Gs, [], q, *refs, *outs)

    # batch.bin: int32 D, G, B; feats (B, G, D); then for (order, K) in (0,3),(1,2):
    # patch scores (B, G) and image scores (B, top 2)
    D, G, B = 12, 19, 6
    feats = rng.standard_normal((B, G, D)).astype(np.float32)
    outs = []
    for order, k in [(0, 3), (1, 2)]:
        a_all, img = [], []
        for b in range(B):
            s = np.stack([cos_dist(feats[b].astype(np.float64), feats[o].astype(np.float64)).min(1)
                          for o in range(B) if o != b], 1)
            a = patch_scores(s, order, k)
            a_all.append(a)
            img.append(image_score(a, 2))
        outs += [np.stack(a_all), np.array(img)]
    write("batch.bin", [D, G, B], [], feats, *outs)


if __name__ == "__main__":
    main()
