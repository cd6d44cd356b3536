"""The coefficients of xc_exp_core's polynomial (src_c/xc_math.h); run: python3 tools/fit_exp.py

The float64 twin of tools/fit_expf.py: exp(r) ~ 1 + r + r^2 q(r) on |r| <= ln(2)/2, q of degree
9, its ten coefficients fitted for the least maximum *relative* error. float64 cannot represent
the fit's error (about 1e-18), so the residual is taken in mpmath at 60 digits and only the
*correction* to the Taylor coefficients is fitted in float64 (Lawson's algorithm, least squares
reweighted by each point's error, on Chebyshev nodes): the correction is 1e-14 of a coefficient's
size, far inside float64's reach. The coefficients are then rounded to float64 one at a time,
lowest degree first, the others refitted after each. Prints them as C literals of 17 significant
digits (enough to give back the double) and the fit's error (evaluated exactly; the float64
evaluation adds its own roundings: see the accuracy note in xc_math.h). Needs mpmath.
"""

import math

import mpmath
import numpy as np

mpmath.mp.dps = 60
HALF_RANGE = math.log(2.0) / 2 * 1.0001  # |r| <= ln(2)/2, plus the reduction's rounding
DEGREES = list(range(2, 12))  # r^2 q(r) = sum_k c_k r^k, k = 2..11


def lawson(basis, target, iters=200):
    """Coefficients minimising max |basis @ c - target| (rows: points)."""
    weight = np.full(len(target), 1.0 / len(target))
    for _ in range(iters):
        root = np.sqrt(weight)
        coef, *_ = np.linalg.lstsq(basis * root[:, None], target * root, rcond=None)
        err = np.abs(basis @ coef - target)
        weight = weight * err
        weight /= weight.sum()
    return coef


def relative_residual(nodes, coefs):
    """(exp(r) - 1 - r - sum_k c_k r^k) / exp(r) at each node, exactly (60 digits), as float64."""
    out = []
    for r in nodes:
        rm = mpmath.mpf(float(r))
        e = mpmath.exp(rm)
        poly = 1 + rm + sum(mpmath.mpf(c) * rm**k for k, c in coefs.items())
        out.append(float((e - poly) / e))
    return np.array(out)


def main():
    n = 3000
    r = HALF_RANGE * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    e = np.exp(r)
    taylor = {k: 1.0 / math.factorial(k) for k in DEGREES}  # the starting point
    fixed = {}
    for k in DEGREES:
        free = [j for j in DEGREES if j not in fixed]
        current = {**taylor, **fixed}
        # the correction to the free coefficients that best cancels the residual
        basis = np.stack([r**j for j in free], 1) / e[:, None]
        delta = lawson(basis, relative_residual(r, current))
        for j, d in zip(free, delta):
            taylor[j] = float(mpmath.mpf(taylor[j]) + mpmath.mpf(d))
        fixed[k] = taylor[k]  # already a float64: rounded as it was stored
    for k, c in fixed.items():
        print(f"c{k} = {c!r}  /* {c.hex()}, 1/{k}! = {1 / math.factorial(k)!r} */")
    print(f"max relative error of the fit: {np.abs(relative_residual(r, fixed)).max():.3g}")


if __name__ == "__main__":
    main()
