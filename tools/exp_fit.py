#!/usr/bin/env python3
"""The degree-4 polynomial of v_exp2_parts_bf16 (src/compute/vecmath.h): 2^f on |f| <= 1/2
(--base2; the bf16 softmax) or of the older exp(r) on |r| <= ln2/2 (the default), with the
least maximum relative error (Lawson's iteratively reweighted least squares on
Chebyshev points), coefficients rounded to float, then checked by evaluating the
polynomial in float32 the way the kernel does (Horner, one rounding per step).

    python3 tools/exp_fit.py [--base2]  # prints the coefficients (C hex floats) and the error

The kernel's P values are rounded to bf16 (8 significant bits, relative step 2^-8 =
3.9e-3) right after, so 2.7e-6 is far below what survives; the softmax denominator is
summed from the same values, with the same relative error. Needs numpy only.
"""
import numpy as np


def fit(degree=4, points=4001, iterations=300, base2=False):
    half = 0.5 if base2 else np.log(2.0) / 2.0
    x = np.cos(np.linspace(0.0, np.pi, points)) * half
    f = np.exp2(x) if base2 else np.exp(x)
    vander = np.vander(x, degree + 1, increasing=True)
    weight = np.ones_like(x)
    for _ in range(iterations):
        w = weight / f  # relative error: residual / f
        coef, *_ = np.linalg.lstsq(vander * w[:, None], f * w, rcond=None)
        err = np.abs(vander @ coef - f) / f
        weight = weight * err / err.max() + 1e-12
        weight /= weight.sum()
    return coef.astype(np.float32)


def max_rel_error(coef, base2=False):
    half = 0.5 if base2 else np.log(2.0) / 2.0
    r = np.linspace(-half * 1.0001, half * 1.0001, 200001).astype(np.float32)
    p = np.full_like(r, coef[-1])
    for c in coef[-2::-1]:
        p = (p.astype(np.float64) * r + np.float64(c)).astype(np.float32)
    exact = np.exp2(r.astype(np.float64)) if base2 else np.exp(r.astype(np.float64))
    return float(np.max(np.abs(p - exact) / exact))


def main():
    import sys
    base2 = "--base2" in sys.argv[1:]
    coef = fit(base2=base2)
    print("highest degree first (vecmath.h's Horner order):")
    for c in coef[::-1]:
        mantissa, exponent = float(c).hex().split("p")
        print("    %-22s (%.9g)" % (mantissa.rstrip("0") + "p" + exponent + "f", c))
    print("max relative error in float32: %.3g" % max_rel_error(coef, base2))


if __name__ == "__main__":
    main()
