#!/usr/bin/env python3
"""Reference fixture for src/scale/zeroshot_sampled.c (tests/fixtures/scale/sampled.bin).

Re-implements, independently of the C code, the documented comparator rule
(docs/SCALE.md) and Eq. 1-4 of METHOD.md in NumPy float64:
  ring = Fisher-Yates permutation of the n images driven by splitmix64 seeded with
         seed ^ 0x5ca1ab1e00000000 (j = next() % (i + 1), i = n-1 .. 1);
  image at ring position p is scored against positions p +- 1 .. p +- floor(R/2), and for
  odd R also p + floor(n/2);
  s_i^c = min_j (1 - cos(q_i, f^c_j)) clamped to [0, 2]; a_i = mean of the K lowest s_i^c.
The batch is odd (n = 11) with odd R = 5, the case where the extra pair is one-way.

Layout (little-endian): int32 B, G, D, R, seed, K; float32 features (B, G, D);
float32 patch scores (B, G).
Run: python3 tools/make_scale_fixtures.py   (numpy only)
"""
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "scale")
from splitmix_ref import MASK, splitmix64  # noqa: E402 (tools/ is on sys.path)


def comparators(n, r, seed):
    if r <= 0 or r >= n - 1:
        return [[j for j in range(n) if j != i] for i in range(n)]
    state = seed ^ 0x5CA1AB1E00000000
    ring = list(range(n))
    for i in range(n - 1, 0, -1):
        state, z = splitmix64(state)
        j = z % (i + 1)
        ring[i], ring[j] = ring[j], ring[i]
    comp = [[] for _ in range(n)]
    for p in range(n):
        for o in range(1, r // 2 + 1):
            comp[ring[p]].append(ring[(p + o) % n])
            comp[ring[p]].append(ring[(p - o) % n])
        if r % 2:
            comp[ring[p]].append(ring[(p + n // 2) % n])
    return comp


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(15)
    B, G, D, R, seed, K = 11, 13, 7, 5, 4, 2
    feats = rng.standard_normal((B, G, D)).astype(np.float32)
    f = feats.astype(np.float64)
    unit = f / np.linalg.norm(f, axis=2, keepdims=True)
    comp = comparators(B, R, seed)
    scores = np.zeros((B, G))
    for b in range(B):
        assert len(set(comp[b])) == R and b not in comp[b]
        s = np.stack([np.clip(1 - unit[b] @ unit[c].T, 0, 2).min(axis=1) for c in comp[b]], axis=1)
        scores[b] = np.sort(s, axis=1)[:, :K].mean(axis=1)
    with open(os.path.join(OUT, "sampled.bin"), "wb") as fh:
        fh.write(struct.pack("<6i", B, G, D, R, seed, K))
        fh.write(np.ascontiguousarray(feats, "<f4").tobytes())
        fh.write(np.ascontiguousarray(scores, "<f4").tobytes())
    print("wrote", os.path.join(OUT, "sampled.bin"))


if __name__ == "__main__":
    main()
