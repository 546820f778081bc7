#!/usr/bin/env python3
"""Writes tests/fixtures/sample/refs.txt: the reference rule of pe_sample_refs (the seeded
few-shot sampler, docs/METHOD.md "Reference sampling") written again, independently, in
plain Python integers, so tests/test_sample.c checks the C code against it.

Rule: splitmix64 (state += 0x9e3779b97f4a7c15, then two xor-shift-multiply rounds and a
final xor-shift, all mod 2^64); state = seed; perm = 0..n-1; for i in 0..n-2:
j = i + next() % (n - i); swap perm[i], perm[j].

Format, one record per line:
  mix SEED V1 V2 V3 V4 V5       the first five splitmix64 outputs from state SEED
  perm SEED N P0 P1 ... PN-1    pe_sample_refs(SEED, N)
Run: python3 tools/make_sample_fixtures.py   (standard library only)
"""
import os

MASK = (1 << 64) - 1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "sample")


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def sample_refs(seed, n):
    rng = SplitMix64(seed)
    perm = list(range(n))
    for i in range(n - 1):
        j = i + rng.next() % (n - i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = []
    for seed in (0, 1, 1234567, MASK):
        rng = SplitMix64(seed)
        lines.append("mix %d %s" % (seed, " ".join(str(rng.next()) for _ in range(5))))
    for seed in (0, 1, 2, 3, 42, 2**40 + 7, MASK):
        for n in (0, 1, 2, 3, 5, 10, 37, 200):
            lines.append(" ".join(["perm", str(seed), str(n)] + [str(p) for p in sample_refs(seed, n)]))
    with open(os.path.join(OUT, "refs.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d records to %s" % (len(lines), os.path.join(OUT, "refs.txt")))


if __name__ == "__main__":
    main()
