"""make_beyond_fixtures.py — NumPy references for docs/BEYOND.md's kernels, written to
tests/fixtures/beyond/ (float32 .npy; tests/test_beyond.c compares the C results):

  query.npy (G, D), views.npy (V, G, D)   grid GH x GW, V = 4 reference views
  window_r{R}.npy (V, G)                   Eq. 2 restricted to |dy|, |dx| <= R, per view
  groups_{w}_{order}{K}.npy (G)            Eq. 3 over 2 groups of 2 views (min over a
                                           group's views), w = global or r1
  points.npy (N, D), coreset_seed{S}.npy   greedy k-center on the normalised rows, first
                                           centre splitmix64(S) % N, 30 centres

Run with any Python that has numpy:  python tools/make_beyond_fixtures.py
"""
import os
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "beyond")
GH, GW, D, V = 5, 6, 16, 4
from splitmix_ref import MASK, splitmix64  # noqa: E402 (tools/ is on sys.path)


def cos_dist(a, b):
    """(n, D) x (m, D) -> (n, m) cosine distances clamped to [0, 2], in float64."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.clip(1.0 - a @ b.T, 0.0, 2.0)


def window_min(q, ref, r):
    d = cos_dist(q, ref)
    ys, xs = np.divmod(np.arange(GH * GW), GW)
    near = (np.abs(ys[:, None] - ys[None, :]) <= r) & (np.abs(xs[:, None] - xs[None, :]) <= r)
    return np.where(near, d, np.inf).min(axis=1)


def eq3(per_group, k, order):
    s = np.sort(per_group, axis=1)
    return (s[:, :k] if order == "lowest" else s[:, -k:]).mean(axis=1)


def kcenter(x, keep, seed):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    _, r = splitmix64(seed)
    c = r % len(x)
    mind = np.full(len(x), np.inf)
    sel = []
    for _ in range(keep):
        sel.append(c)
        mind = np.minimum(mind, ((u - u[c]) ** 2).sum(axis=1))
        mind[sel] = -1
        c = int(np.argmax(mind))  # first index on ties, as the C code
    return np.array(sel)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(14)
    q = rng.standard_normal((GH * GW, D)).astype(np.float32)
    views = rng.standard_normal((V, GH * GW, D)).astype(np.float32)
    np.save(os.path.join(OUT, "query.npy"), q)
    np.save(os.path.join(OUT, "views.npy"), views)
    q64, v64 = q.astype(np.float64), views.astype(np.float64)
    for r in (0, 1, 2):
        w = np.stack([window_min(q64, v64[v], r) for v in range(V)])
        np.save(os.path.join(OUT, f"window_r{r}.npy"), w.astype(np.float32))
    groups = [(0, 2), (2, 4)]
    for wname, r in (("global", 99), ("r1", 1)):
        per_view = np.stack([window_min(q64, v64[v], r) for v in range(V)], axis=1)  # (G, V)
        per_group = np.stack([per_view[:, a:b].min(axis=1) for a, b in groups], axis=1)
        for order in ("lowest", "highest"):
            for k in (1, 2):
                np.save(os.path.join(OUT, f"groups_{wname}_{order}{k}.npy"),
                        eq3(per_group, k, order).astype(np.float32))
    pts = rng.standard_normal((300, D)).astype(np.float32)
    np.save(os.path.join(OUT, "points.npy"), pts)
    for seed in (0, 7):
        np.save(os.path.join(OUT, f"coreset_seed{seed}.npy"),
                kcenter(pts.astype(np.float64), 30, seed).astype(np.float32))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
