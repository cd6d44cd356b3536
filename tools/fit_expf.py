"""The coefficients of xc_expf_core's polynomial (src_c/xc_math.h); run: python3 tools/fit_expf.py

exp(r) ~ 1 + r + r^2 q(r) on |r| <= ln(2)/2, q of degree 4, its five coefficients fitted for the
least maximum *relative* error (a float's ulp is relative). Lawson's algorithm (least squares
reweighted by each point's error, which converges to the minimax fit) on Chebyshev nodes; the
coefficients are then rounded to float32 one at a time, lowest degree first, the others refitted
after each, so that the rounding of one is absorbed by the rest. Prints them as C literals of 9
significant digits (enough to give back the float) and the fit's error (float64; the float32
evaluation adds its own roundings: see the accuracy note in xc_math.h).
"""

import re

import numpy as np

HALF_RANGE = np.log(2.0) / 2 * 1.0001  # |r| <= ln(2)/2, plus the reduction's rounding
DEGREES = [2, 3, 4, 5, 6]  # r^2 q(r) = sum_k c_k r^k


def lawson(basis, target, iters=100):
    """Coefficients minimising max |basis @ c - target| (rows: points)."""
    weight = np.full(len(target), 1.0 / len(target))
    for _ in range(iters):
        root = np.sqrt(weight)
        coef, *_ = np.linalg.lstsq(basis * root[:, None], target * root, rcond=None)
        err = np.abs(basis @ coef - target)
        weight = weight * err
        weight /= weight.sum()
    return coef


def main():
    n = 4000
    r = HALF_RANGE * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    e = np.exp(r)
    fixed = {}
    for k in DEGREES:
        free = [j for j in DEGREES if j not in fixed]
        basis = np.stack([r**j for j in free], 1) / e[:, None]
        target = (e - 1 - r - sum(c * r**j for j, c in fixed.items())) / e
        fixed[k] = float(np.float32(lawson(basis, target)[0]))
    approx = 1 + r + sum(c * r**j for j, c in fixed.items())
    for k, c in fixed.items():
        print(f"c{k} = {c:.9g}f  /* {re.sub('0+p', 'p', c.hex())} */")
    print(f"max relative error of the fit: {np.abs(approx / e - 1).max():.3g}")


if __name__ == "__main__":
    main()
