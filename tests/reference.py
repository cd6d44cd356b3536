"""Slow float64 reference for every public xentc function. Tests only; it never ships.

Written as the formulas in shared/spec/api.md and notes/semantics.md read, one row at a time in
plain Python floats, with an algorithm no kernel uses: math.fsum rounds every sum correctly, so the
result does not depend on a summation order; math.exp / math.log1p do the rest. Inputs of shape
(..., C) are reshaped to (N, C) rows; results come back as float64 arrays of the batch shape (or
Python floats).

Notation (semantics.md): a row z of C logits, m = max_k z_k, e_k = exp(z_k - m), S = sum_k e_k,
lse = log-sum-exp(z), p = softmax(z); class weights w (default ones), W = sum_k w_k;
eps = label_smoothing; s = sample weight (default 1); zl = z_loss.

Logit transform (issue 6): with logit_scale a and softcap c, every formula below runs on the
transformed row z'' = c tanh(a z / c) (a z without a cap), evaluated here in float64 from the
given logits; the gradient with respect to z is the one with respect to z'' times
dz''/dz = a sech^2(a z / c) (a without a cap), sech^2 written 4 e / (1 + e)^2 with e = exp(-2|u|),
which neither overflows nor cancels (an independent form from the kernels' 1 - (z''/c)^2).

Accuracy: a near-certain row has a loss far below its lse, and a true-class gradient p_y - 1 far
below 1. Neither is computed by cancellation here: -log p_k = (m - z_k) + log1p(sum of e over the
non-argmax classes) adds two non-negative numbers, and 1 - p_k is the sum of the other
probabilities.

The last section holds the comparison helpers the tests share (conftest's TOL table applied to a
loss, and to a gradient scaled to a unit-size loss).
"""

import math
from typing import NamedTuple

import numpy as np
from conftest import TOL

REDUCTIONS = ("none", "mean", "sum")


def _fsum_except(values, k):
    """sum_{j != k} values[j], correctly rounded (never sum(values) - values[k])."""
    return math.fsum(values[:k] + values[k + 1 :])


class _Row:
    """One row of logits whose max is finite (callers handle NaN / +inf / all -inf rows)."""

    def __init__(self, z):
        self.z = z
        self.m = max(z)
        self.top = z.index(self.m)
        self.e = [math.exp(v - self.m) for v in z]  # e[top] == 1; a masked (-inf) class gives 0
        self.rest = _fsum_except(self.e, self.top)  # S - 1, exactly rounded
        self.log_s = math.log1p(self.rest)  # log S, accurate also when S is 1 + tiny
        self.s = math.fsum(self.e)
        self.lse = self.m + self.log_s

    def nll(self, k):
        """-log p_k = lse - z_k, as (m - z_k) + log S: two non-negative terms, no cancellation."""
        return (self.m - self.z[k]) + self.log_s

    def p(self, k):
        return self.e[k] / self.s

    def one_minus_p(self, k):
        """1 - p_k. Only a class with p_k > 1/2 (at most one per row) risks cancellation; for it,
        sum the other classes' e instead."""
        if 2.0 * self.e[k] <= self.s:
            return 1.0 - self.p(k)
        return _fsum_except(self.e, k) / self.s


def _row_lse(z):
    # scipy.special.logsumexp rules (semantics.md, "lse"): any NaN -> NaN; else a +inf -> +inf;
    # all -inf -> -inf.
    if any(math.isnan(v) for v in z):
        return math.nan
    m = max(z)
    if math.isinf(m):
        return m
    return _Row(z).lse


def _finite_max(z):
    """semantics.md: a counted row holding NaN, or whose max is not finite (all -inf, or a +inf),
    has loss NaN and an all-NaN gradient row, as torch (-inf - -inf and inf - inf are NaN)."""
    return not any(math.isnan(v) for v in z) and math.isfinite(max(z))


# ---------------------------------------------------------------------------------------------
# Per-row cross-entropy. `w` is a list of C class weights; the sample weight is applied by callers.


def _smoothed(t, eps):
    """t' = (1 - eps) t + eps / C, the order of operations torch uses."""
    c = len(t)
    return [tk * (1.0 - eps) + eps / c for tk in t]


def _loss_index(row, y, w, eps, zl):
    """(1-eps) w_y (lse - z_y) + (eps/C) sum_k w_k (lse - z_k) + zl w_y lse^2."""
    c = len(row.z)
    # zl == 0: no term at all (lse**2 overflows for 1e300 logits)
    terms = [(1.0 - eps) * w[y] * row.nll(y), zl * w[y] * row.lse**2 if zl else 0.0]
    if eps > 0:  # torch adds the smoothing term only when label_smoothing > 0
        terms.append(eps / c * math.fsum(w[k] * row.nll(k) for k in range(c)))
    return math.fsum(terms)


def _grad_index(row, y, w, eps, zl):
    """d loss / dz_j = A p_j - (1-eps) w_y [j==y] - (eps/C) w_j,
    with A = (1-eps) w_y + (eps/C) W + 2 zl w_y lse,
    evaluated as (1-eps) w_y (p_j - [j==y]) + (eps/C)(W p_j - w_j) + 2 zl w_y lse p_j so that the
    true class gets p_y - 1 = -(1 - p_y) without cancellation."""
    c = len(row.z)
    big_w = math.fsum(w)
    grad = []
    for j in range(c):
        p_j = row.p(j)
        hit = -row.one_minus_p(y) if j == y else p_j  # p_j - [j == y]
        grad.append(
            math.fsum(
                (
                    (1.0 - eps) * w[y] * hit,
                    eps / c * (big_w * p_j - w[j]),
                    2.0 * zl * w[y] * row.lse * p_j,
                )
            )
        )
    return grad


def _loss_prob(row, t, w, eps, zl):
    """sum_k w_k t'_k (lse - z_k) + zl lse^2."""
    tp = _smoothed(t, eps)
    # semantics.md, DELIBERATE DEVIATION from torch: a class with t'_k == 0 contributes exactly 0
    # even when z_k = -inf (torch computes 0 * inf = NaN).
    ce = math.fsum(w[k] * tp[k] * row.nll(k) for k in range(len(tp)) if tp[k] != 0.0)
    return math.fsum((ce, zl * row.lse**2))


def _grad_prob(row, t, w, eps, zl):
    """d loss / dz_j = (T + 2 zl lse) p_j - u_j with u = w * t', T = sum_k u_k, evaluated as
    p_j (T - u_j) - u_j (1 - p_j) + 2 zl lse p_j: a one-hot target on a confident row then gives
    -(1 - p_y) without cancellation."""
    u = [wk * tk for wk, tk in zip(w, _smoothed(t, eps))]
    big_t = math.fsum(u)
    grad = []
    for j in range(len(u)):
        p_j = row.p(j)
        others = big_t - u[j] if 2.0 * u[j] <= big_t else _fsum_except(u, j)  # T - u_j
        grad.append(math.fsum((p_j * others, -u[j] * row.one_minus_p(j), 2.0 * zl * row.lse * p_j)))
    return grad


# ---------------------------------------------------------------------------------------------
# Argument handling shared by the public reference functions.


def _transform(v, logit_scale, softcap):
    """(z'', dz''/dz) of one logit (see the module docstring)."""
    scaled = logit_scale * v
    if softcap is None:
        return scaled, logit_scale
    u = scaled / softcap
    if math.isnan(u):
        return math.nan, math.nan
    e = math.exp(-2.0 * abs(u))
    return softcap * math.tanh(u), logit_scale * 4.0 * e / (1.0 + e) ** 2


class _Problem:
    """The arguments of cross_entropy as lists of Python floats / ints, one entry per row."""

    def __init__(
        self, logits, target, weight, sample_weight, ignore_index, softcap=None, logit_scale=1.0
    ):
        logits = np.asarray(logits)
        target = np.asarray(target)
        self.batch_shape = logits.shape[:-1]
        self.c = logits.shape[-1]
        # float16 / bfloat16 logits widen exactly to float64 (through float32 for bfloat16,
        # whose NumPy casts from ml_dtypes go that way)
        wide = logits.astype(np.float32) if logits.dtype.itemsize == 2 else logits
        self.rows = [list(map(float, r)) for r in wide.astype(np.float64).reshape(-1, self.c)]
        self.chain = None  # dz''/dz per row, when transformed
        if softcap is not None or logit_scale != 1.0:
            pairs = [[_transform(v, logit_scale, softcap) for v in r] for r in self.rows]
            self.rows = [[p[0] for p in r] for r in pairs]
            self.chain = [[p[1] for p in r] for r in pairs]
        n = len(self.rows)
        self.soft = target.dtype.kind == "f"
        if self.soft:
            self.targets = [
                list(map(float, r)) for r in target.astype(np.float64).reshape(n, self.c)
            ]
        else:
            # Python ints: unsigned targets are compared as integers (api.md: uint16 65436 != -100).
            self.targets = [int(v) for v in target.reshape(n)]
        self.w = [1.0] * self.c if weight is None else [float(v) for v in np.asarray(weight)]
        self.s = (
            [1.0] * n
            if sample_weight is None
            else [float(v) for v in np.asarray(sample_weight, dtype=np.float64).reshape(n)]
        )
        self.ignore_index = ignore_index

    def ignored(self, i):
        # torch: ignore_index applies to class-index targets only (semantics.md: "ignore_index
        # plays no part" for probability targets).
        return not self.soft and self.targets[i] == self.ignore_index

    def counted(self, i):
        # semantics.md: rows that do not count are ignored rows and rows with s_i == 0.
        return not self.ignored(i) and self.s[i] != 0.0

    def denominator(self):
        """The 'mean' denominator D: sum of s_i w[y_i] over non-ignored rows (index targets, torch's
        sum of w[y_i] with sample weights), or sum of s_i (probability targets, torch's N)."""
        if self.soft:
            return math.fsum(self.s)
        return math.fsum(
            self.s[i] * self.w[self.targets[i]]
            for i in range(len(self.rows))
            if not self.ignored(i)
        )

    def row_loss(self, i, eps, zl):
        """loss_i including the sample weight."""
        if not self.counted(i):
            # semantics.md: loss exactly 0 even if the row holds NaN / inf (torch gives 0 for an
            # ignored finite row; for a NaN row torch's gradient would be NaN: deviation).
            return 0.0
        z = self.rows[i]
        if not _finite_max(z):
            return math.nan
        row = _Row(z)
        if self.soft:
            return self.s[i] * _loss_prob(row, self.targets[i], self.w, eps, zl)
        return self.s[i] * _loss_index(row, self.targets[i], self.w, eps, zl)

    def row_grad(self, i, eps, zl):
        """d loss_i / dz_i including the sample weight."""
        if not self.counted(i):
            return [0.0] * self.c  # semantics.md: gradient exactly 0, even for NaN / inf logits
        z = self.rows[i]
        if not _finite_max(z):
            return [math.nan] * self.c  # semantics.md: a counted NaN / non-finite-max row: all NaN
        row = _Row(z)
        if self.soft:
            g = _grad_prob(row, self.targets[i], self.w, eps, zl)
        else:
            g = _grad_index(row, self.targets[i], self.w, eps, zl)
        if self.chain is not None:
            g = [v * d for v, d in zip(g, self.chain[i])]
        return [self.s[i] * v for v in g]


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")


# ---------------------------------------------------------------------------------------------
# Public reference functions.


def ref_denominator(logits, target, *, weight=None, sample_weight=None, ignore_index=-100):
    """The 'mean' denominator D (0.0 when nothing counts)."""
    return _Problem(logits, target, weight, sample_weight, ignore_index).denominator()


def ref_cross_entropy(
    logits,
    target,
    *,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    logit_scale=1.0,
):
    """-> (loss, lse_rows). loss: a float for 'mean'/'sum', for 'none' a float64 array of the
    batch shape; lse_rows: float64 array of the batch shape, for every row (ignored ones too),
    of the transformed logits."""
    _check_reduction(reduction)
    prob = _Problem(logits, target, weight, sample_weight, ignore_index, softcap, logit_scale)
    losses = [prob.row_loss(i, label_smoothing, z_loss) for i in range(len(prob.rows))]
    lse = np.array([_row_lse(z) for z in prob.rows], dtype=np.float64).reshape(prob.batch_shape)
    if reduction == "none":
        return np.array(losses, dtype=np.float64).reshape(prob.batch_shape), lse
    total = math.fsum(losses)  # 0.0 for N == 0 (torch's 'sum' of nothing)
    if reduction == "sum":
        return total, lse
    den = prob.denominator()
    # semantics.md: D == 0 (N == 0, all ignored, all zero weight) -> nan, as torch's 0 / 0.
    return (total / den if den != 0.0 else math.nan), lse


def ref_grad(
    logits,
    target,
    *,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    grad_output=None,
    softcap=None,
    logit_scale=1.0,
):
    """The vector-Jacobian product of the loss with grad_output: float64, shape of logits.
    'mean': grad_output / D * d(sum_i loss_i)/dz (all zeros when D == 0); 'sum': grad_output *
    d(sum_i loss_i)/dz; 'none': row i times grad_output_i (a scalar applies to every row)."""
    _check_reduction(reduction)
    prob = _Problem(logits, target, weight, sample_weight, ignore_index, softcap, logit_scale)
    n = len(prob.rows)
    go = 1.0 if grad_output is None else grad_output
    if reduction == "none":
        go = np.broadcast_to(np.asarray(go, dtype=np.float64), prob.batch_shape)
        scale = [float(v) for v in go.reshape(n)]
    elif reduction == "sum":
        scale = [float(go)] * n
    else:
        den = prob.denominator()
        if den == 0.0:
            # semantics.md / torch: nothing counts -> the gradient is all zeros.
            return np.zeros(np.shape(logits), dtype=np.float64)
        scale = [float(go) / den] * n
    grad = np.zeros((n, prob.c), dtype=np.float64)
    for i in range(n):
        if prob.counted(i):
            grad[i] = [scale[i] * v for v in prob.row_grad(i, label_smoothing, z_loss)]
    return grad.reshape(np.shape(logits))


def _rows_along(x, axis):
    """x as float64 with `axis` moved last, flattened to (rows, size); and the moved shape."""
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape


def ref_logsumexp(x, axis=-1):
    """log sum_k exp(x_k) along `axis`, float64, scipy's rules for NaN / inf."""
    rows, moved_shape = _rows_along(x, axis)
    return np.array([_row_lse(list(map(float, r))) for r in rows], dtype=np.float64).reshape(
        moved_shape[:-1]
    )


def _map_rows(x, axis, per_row):
    rows, moved_shape = _rows_along(x, axis)
    out = np.empty(rows.shape, dtype=np.float64)
    for i, r in enumerate(rows):
        z = list(map(float, r))
        # Only rows with a finite max are defined here; scipy's own NaN / inf patterns are
        # compared against scipy directly in the tests.
        out[i] = per_row(_Row(z)) if _finite_max(z) else math.nan
    return np.moveaxis(out.reshape(moved_shape), -1, axis)


def ref_softmax(x, axis=-1):
    """p_k = e_k / S along `axis`, float64 (rows with NaN or a non-finite max give NaN)."""
    return _map_rows(x, axis, lambda row: [row.p(k) for k in range(len(row.z))])


def ref_log_softmax(x, axis=-1):
    """log p_k = -((m - z_k) + log S) along `axis`, float64 (NaN rows for NaN / non-finite max)."""
    return _map_rows(x, axis, lambda row: [-row.nll(k) for k in range(len(row.z))])


# ---------------------------------------------------------------------------------------------
# Comparing an implementation with the reference (or torch) under conftest's TOL table


def check_loss(actual, expected, dtype, msg, *, reduction):
    """Loss within the TOL table; the return type the spec promises."""
    tol = TOL[np.dtype(dtype)]
    if reduction == "none":
        assert isinstance(actual, np.ndarray), f"'none' must return an ndarray; {msg}"
        assert actual.dtype == np.dtype(dtype), f"'none' loss dtype {actual.dtype}; {msg}"
        assert actual.shape == np.shape(expected), f"'none' loss shape {actual.shape}; {msg}"
    else:
        assert type(actual) is float, (
            f"{reduction!r} must return a Python float, got {type(actual)}; {msg}"
        )
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        expected,
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=f"loss: {msg}",
    )


def unit_grad_scale(logits, target, options, grad_output, ref_lse):
    """The factor that brings a gradient to a unit-size loss (conftest.TOL): the 'mean' denominator
    over the largest multiplier |grad_output_i| * s_i * max(w) of a counted row, that multiplier
    widened by the row's target mass (soft targets need not sum to 1) and its z-loss term
    2 zl |lse_i|. Returns 1.0 when nothing counts (the gradient must then be exactly 0)."""
    batch, c = np.shape(logits)[:-1], np.shape(logits)[-1]
    target = np.asarray(target)
    go = np.broadcast_to(np.asarray(1.0 if grad_output is None else grad_output, np.float64), batch)
    s = options.get("sample_weight")
    s = np.ones(batch) if s is None else np.asarray(s, dtype=np.float64)
    w = options.get("weight")
    wmax = 1.0 if w is None else float(np.max(w))
    if target.dtype.kind == "f":
        eps = options.get("label_smoothing", 0.0)
        mass = np.maximum(1.0, ((1 - eps) * target.astype(np.float64) + eps / c).sum(axis=-1))
        counted = np.ones(batch, dtype=bool)
    else:
        mass = np.ones(batch)
        counted = target.astype(np.int64) != options.get("ignore_index", -100)
    lse = np.where(np.isfinite(ref_lse), np.abs(ref_lse), 0.0)
    bound = np.abs(go) * s * wmax * (mass + 2 * options.get("z_loss", 0.0) * lse)
    biggest = float(np.max(bound[counted], initial=0.0))
    factor = 1.0
    if options["reduction"] == "mean":
        factor = ref_denominator(
            logits,
            target,
            weight=w,
            sample_weight=options.get("sample_weight"),
            ignore_index=options.get("ignore_index", -100),
        )
    if not (0 < biggest < math.inf and 0 < factor < math.inf):
        return 1.0
    return factor / biggest


def check_grad(actual, expected, dtype, scale, msg):
    """Gradient within grad_atol once both are scaled to a unit-size loss; NaN where expected."""
    assert actual.shape == expected.shape, f"grad shape {actual.shape}; {msg}"
    assert actual.dtype == np.dtype(dtype), f"grad dtype {actual.dtype}; {msg}"
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_allclose(
            actual.astype(np.float64) * scale,
            expected * scale,
            rtol=0,
            atol=TOL[np.dtype(dtype)]["grad_atol"],
            equal_nan=True,
            err_msg=f"grad (scaled by {scale:.3g}): {msg}",
        )


class Result(NamedTuple):
    """Every output of one call, from the reference: loss as xentc returns it (a float for
    'mean'/'sum', an array for 'none'), lse and grad (float64), and `unit`, the factor that
    scales a gradient to a unit-size loss (unit_grad_scale)."""

    loss: "float | np.ndarray"
    lse: np.ndarray
    grad: np.ndarray
    unit: float


def ref_result(logits, target, *, grad_output=None, **options):
    """ref_cross_entropy, ref_grad and unit_grad_scale of one call, as a Result."""
    options.setdefault("reduction", "mean")
    loss, lse = ref_cross_entropy(logits, target, **options)
    grad = ref_grad(logits, target, grad_output=grad_output, **options)
    return Result(loss, lse, grad, unit_grad_scale(logits, target, options, grad_output, lse))


def assert_close(dtype, got_loss, ref, err_msg, got_grad=None, got_lse=None):
    """xentc's results against a Result within the spec's tolerance for `dtype` (TOL)."""
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(
        got_loss, ref.loss, rtol=tol["rtol"], atol=tol["atol"], err_msg=f"loss: {err_msg}"
    )
    if got_lse is not None:
        np.testing.assert_allclose(
            got_lse, ref.lse, rtol=tol["rtol"], atol=tol["atol"], err_msg=f"lse: {err_msg}"
        )
    if got_grad is not None:
        check_grad(np.asarray(got_grad), ref.grad, np.asarray(got_grad).dtype, ref.unit, err_msg)
