"""Cross-entropy over vocabulary shards: the class axis split into blocks, no caller holding a
whole row of logits (the vocabulary-parallel cross-entropy of Megatron-LM and flash-attn).

Three steps, each row independent:
  1. shard_stats(block, ...)      per block (any process): the row's max over the block, the sum
                                  of exp(z - max) without one "pivot" class, the target's logit
                                  when the target falls in the block, the smoothing sums.
  2. combine_shards(all stats)    per row, wherever the stats meet: the exact (max, sum) merge,
                                  in class order, giving the log-sum-exp, the losses and the
                                  reduction, and each row's gradient coefficients. O(rows) work.
  3. shard_grad(block, totals)    per block: the block's gradient from the merged row statistics.
The kernels are src_c/xc_shard.inc; the merge is here, in float64 NumPy. The result equals
xentc.cross_entropy(_with_grad) on the whole array within the spec's tolerance (the sums add in
another order), and is bitwise the same for a given split whatever n_threads or the order in
which the shards' statistics arrive (they are sorted by class_offset first).

Accuracy: the merge keeps the whole-row kernel's split. For index targets the sum leaves the
target out, so a confident row's loss is (M - z_y) + log(s), or log1p(s_other) when z_y is the
max, and its target gradient uses 1 - p_y = s_other / s: as accurate as on one array. For
probability targets each shard leaves out its first max class, and the merge keeps the first
shard's (the row's first max class), as the whole-row kernel does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import _kernels
from ._typing import ArrayLike, Reduction
from ._validate import (
    as_matrix,
    mean_grad_scale,
    mean_loss,
    plan_combine,
    plan_shard,
    plan_shard_grad,
)


class ShardStats(NamedTuple):
    """One block's per-row statistics, as `shard_stats` returns them.

    The arrays hold one entry per row (the rows of ``logits_block.shape[:-1]``, flattened in C
    order). The pivot is the index target when it falls in this block (index targets) or the
    block's first max class (probability targets). Pass them to `combine_shards`; they are
    small (O(rows)), so they are what crosses between workers.

    Attributes
    ----------
    max : ndarray of float64
        The row's max over the block (-inf when it holds only -inf or NaN).
    sumexp : ndarray of float64
        The sum of ``exp(z - max)`` over the block's classes except the pivot; when max is not
        finite, the sum of ``exp(z)`` over all of them (0, inf or NaN).
    pivot : ndarray of int64
        The pivot's global class index, -1 when there is none.
    target_logit : ndarray of float64
        z at the pivot (index targets), NaN when there is none.
    pivot_weight : ndarray of float64
        w at the pivot (index targets) or ``w * t'`` at the pivot (probabilities); 0 if none.
    weight_sum : ndarray of float64
        The sum of the block's class weights (index targets), or of ``w * t'`` except at the
        pivot (probabilities), with ``t' = (1 - label_smoothing) t + label_smoothing / C``.
    gap : ndarray of float64
        The sum of ``w (shift - z)`` (index targets, with label smoothing only), or of
        ``w t' (shift - z)`` except at the pivot (probabilities); shift is the block max when
        finite, else 0.
    counted : ndarray of bool
        The rows whose target is not `ignore_index` (all rows, for probabilities).
    class_offset, n_block, n_classes : int
        The block's classes: ``[class_offset, class_offset + n_block)`` of `n_classes`.
    lead_shape : tuple
        ``logits_block.shape[:-1]``.
    dtype : numpy.dtype
        The logits' dtype.
    kind : {'index', 'prob'}
        Index or probability targets.
    label_smoothing : float
        As given to `shard_stats`.
    ignore_index : int
        As given to `shard_stats`.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.3, 0.0]])
    >>> stats = xentc.shard_stats(logits[:, :2], np.array([0, 3]), class_offset=0, n_classes=4)
    >>> stats.max, stats.pivot  # row 1's target, class 3, is in another block
    (array([2. , 2.5]), array([ 0, -1]))
    """

    max: np.ndarray
    sumexp: np.ndarray
    pivot: np.ndarray
    target_logit: np.ndarray
    pivot_weight: np.ndarray
    weight_sum: np.ndarray
    gap: np.ndarray
    counted: np.ndarray
    class_offset: int
    n_block: int
    n_classes: int
    lead_shape: tuple
    dtype: np.dtype
    kind: str
    label_smoothing: float
    ignore_index: int


class ShardTotals(NamedTuple):
    """The merged statistics of every block of a set of rows, as `combine_shards` returns them.

    Attributes
    ----------
    loss : float or ndarray
        As `xentc.cross_entropy` returns it: a float for ``'mean'`` and ``'sum'``, an array of
        shape `lead_shape` in the logits' dtype for ``'none'``.
    lse : ndarray
        Each row's log-sum-exp, shape `lead_shape`, the logits' dtype (ignored rows included).
    loss_sum : float
        The sum of the row losses (float64).
    denominator : float
        The ``'mean'`` denominator of these rows (torch's, times the sample weights).
    row_max, row_scale, p_coef, exact_class, exact_coef, t_keep, floor, nonfinite
        What `shard_grad` needs, one entry per row (the last three: scalars and a mask): the max
        over all classes, the sample weight (0 for a row that does not count), the gradient's
        coefficients, and the counted rows whose max is not finite (NaN gradient).
    lead_shape, dtype, kind, reduction, n_classes, label_smoothing, ignore_index
        The rows, the logits' dtype, the target kind and the options they were computed with.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.3, 0.0]])
    >>> target = np.array([0, 3])
    >>> stats = [xentc.shard_stats(logits[:, o:o + 2], target, class_offset=o, n_classes=4)
    ...          for o in (0, 2)]
    >>> totals = xentc.combine_shards(stats)
    >>> round(totals.loss, 6), totals.denominator
    (1.616578, 2.0)
    """

    loss: object
    lse: np.ndarray
    loss_sum: float
    denominator: float
    row_max: np.ndarray
    row_scale: np.ndarray
    p_coef: np.ndarray
    exact_class: np.ndarray
    exact_coef: np.ndarray
    t_keep: float
    floor: float
    nonfinite: np.ndarray
    lead_shape: tuple
    dtype: np.dtype
    kind: str
    reduction: str
    n_classes: int
    label_smoothing: float
    ignore_index: int


def shard_stats(
    logits_block: ArrayLike,
    target: ArrayLike,
    *,
    class_offset: int,
    n_classes: int,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    n_threads: int | None = None,
) -> ShardStats:
    """Per-row statistics of one block of classes, for the vocabulary-parallel cross-entropy.

    The block holds classes ``[class_offset, class_offset + B)`` of `n_classes`. It is read
    once; `combine_shards` merges the statistics of every block of the same rows.

    Parameters
    ----------
    logits_block : array_like, shape (..., B)
        float32 or float64, any strides (16-bit logits are not taken here).
    target : array_like
        The GLOBAL class indices (integers of shape ``logits_block.shape[:-1]``, in
        ``[0, n_classes)`` or `ignore_index`), or this block's class probabilities (floating, of
        `logits_block`'s shape).
    class_offset : int
        The global index of the block's first class.
    n_classes : int
        The number of classes over all blocks (C).
    weight : array_like, optional
        All `n_classes` class weights, or the block's B.
    ignore_index : int, default -100
        As in `xentc.cross_entropy`.
    label_smoothing : float, default 0.0
        As in `xentc.cross_entropy`; the same for every block.
    n_threads : int, optional
        As in `xentc.cross_entropy`.

    Returns
    -------
    ShardStats
        The block's per-row statistics.

    Raises
    ------
    TypeError
        Logits not float32 or float64; a target, weight or option of the wrong type.
    ValueError
        A block that does not fit in ``[0, n_classes)``, shapes that do not fit, a target index
        out of range, an option out of its range.

    See Also
    --------
    combine_shards, shard_grad

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.3, 0.0]])
    >>> target = np.array([0, 3])
    >>> stats = [xentc.shard_stats(logits[:, :2], target, class_offset=0, n_classes=4),
    ...          xentc.shard_stats(logits[:, 2:], target, class_offset=2, n_classes=4)]
    >>> totals = xentc.combine_shards(stats)
    >>> bool(np.isclose(totals.loss, xentc.cross_entropy(logits, target)))
    True
    """
    plan = plan_shard(
        logits_block,
        target,
        class_offset,
        n_classes,
        weight,
        ignore_index,
        label_smoothing,
        n_threads,
    )
    n = plan.n_rows
    out = {
        name: np.empty(n, dtype=np.float64)
        for name in (
            "max_out",
            "sum_out",
            "target_logit_out",
            "pivot_weight_out",
            "weight_sum_out",
            "gap_out",
        )
    }
    pivot = np.empty(n, dtype=np.int64)
    is_index = plan.target_index is not None
    if n:
        _kernels.shard_stats(
            plan,
            want_gap=is_index and plan.label_smoothing > 0.0,
            pivot_out=pivot,
            **out,
        )
    weight_sum = out["weight_sum_out"]
    if is_index:
        # the block's class weights, the same for every row (summed in class order, as the
        # whole-row kernel sums them)
        w_block = (
            float(plan.n_block)
            if plan.class_weight is None
            else math.fsum(plan.class_weight.astype(np.float64))
        )
        weight_sum[:] = w_block
        counted = plan.target_index != plan.ignore_index
    else:
        counted = np.ones(n, dtype=bool)
    return ShardStats(
        max=out["max_out"],
        sumexp=out["sum_out"],
        pivot=pivot,
        target_logit=out["target_logit_out"],
        pivot_weight=out["pivot_weight_out"],
        weight_sum=weight_sum,
        gap=out["gap_out"],
        counted=counted,
        class_offset=plan.class_offset,
        n_block=plan.n_block,
        n_classes=plan.n_classes,
        lead_shape=plan.lead_shape,
        dtype=plan.dtype,
        kind="index" if is_index else "prob",
        label_smoothing=plan.label_smoothing,
        ignore_index=plan.ignore_index,
    )


def combine_shards(
    stats: Sequence[ShardStats],
    *,
    sample_weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
) -> ShardTotals:
    """Merge the statistics of every block of the same rows into the loss and what
    `shard_grad` needs.

    The merge is exact and in class order (``M = max m_b``, ``s = sum s_b exp(m_b - M)``), so
    the result is bitwise the same whatever order the statistics arrive in. O(rows) work.

    Parameters
    ----------
    stats : sequence of ShardStats
        One per block, from `shard_stats`, covering every class exactly once, in any order.
    sample_weight : array_like, optional
        Per-row weights >= 0, as in `xentc.cross_entropy`.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As in `xentc.cross_entropy`.
    z_loss : float, default 0.0
        As in `xentc.cross_entropy`.

    Returns
    -------
    ShardTotals
        ``loss`` as `xentc.cross_entropy` returns it, ``lse``, ``loss_sum``, ``denominator``,
        and the rows' gradient coefficients.

    Raises
    ------
    TypeError
        `stats` holding something else than ShardStats.
    ValueError
        Statistics of different rows or options, blocks that leave a gap or overlap, an option
        out of its range.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.3, 0.0]])
    >>> target = np.array([0, 3])
    >>> stats = [xentc.shard_stats(logits[:, o:o + 2], target, class_offset=o, n_classes=4)
    ...          for o in (2, 0)]  # any order
    >>> totals = xentc.combine_shards(stats, reduction="none")
    >>> np.round(totals.loss, 4), np.round(totals.lse, 4)
    (array([0.4493, 2.7838]), array([2.4493, 2.7838]))
    """
    shards, sw, reduction, z_loss = plan_combine(stats, sample_weight, reduction, z_loss)
    first = shards[0]  # plan_combine sorts them by class, contiguous from class 0
    n = first.max.shape[0]
    eps = first.label_smoothing
    floor = eps / first.n_classes
    whole = functools.reduce(merge_adjacent, shards)  # the statistics of every class, as one
    with np.errstate(all="ignore"):
        m = whole.max
        finite = np.isfinite(m)
        mf = np.where(finite, m, 0.0)
        if first.kind == "index":
            merged = _finish_index(whole, mf, eps, floor, z_loss)
            counted = first.counted.copy()
        else:
            merged = _finish_prob(whole, mf, z_loss)
            counted = np.ones(n, dtype=bool)
        lse, row_loss, p_coef, exact_class, exact_coef, w_target, has_nan = merged
        # rows whose max is not finite: scipy's log-sum-exp, a NaN loss (src_c/xc_row_loss.inc)
        lse = np.where(finite, lse, np.where(has_nan, np.nan, m))
        if sw is not None:
            counted &= sw != 0
            row_loss = row_loss * sw
        nonfinite = counted & ~finite
        row_loss = np.where(counted, np.where(finite, row_loss, np.nan), 0.0)
    row_scale = np.where(counted, 1.0 if sw is None else sw, 0.0)
    denominator = _denominator(first, sw, w_target)
    loss_sum = float(row_loss.sum())
    loss: float | np.ndarray
    if reduction == "none":
        loss = row_loss.astype(first.dtype).reshape(first.lead_shape)
    elif reduction == "sum":
        loss = loss_sum
    else:
        loss = mean_loss(loss_sum, denominator)
    return ShardTotals(
        loss=loss,
        lse=lse.astype(first.dtype).reshape(first.lead_shape),
        loss_sum=loss_sum,
        denominator=denominator,
        row_max=m,
        row_scale=row_scale,
        p_coef=p_coef,
        exact_class=exact_class,
        exact_coef=exact_coef,
        t_keep=1.0 - eps if first.kind == "prob" else 0.0,
        floor=floor,
        nonfinite=nonfinite,
        lead_shape=first.lead_shape,
        dtype=first.dtype,
        kind=first.kind,
        reduction=reduction,
        n_classes=first.n_classes,
        label_smoothing=eps,
        ignore_index=first.ignore_index,
    )


def merge_adjacent(a: ShardStats, b: ShardStats) -> ShardStats:
    """The statistics of a's classes followed by b's (adjacent blocks of the same rows), as one
    block's: the max of both, each sum rescaled to it (exactly where a block holds it, by
    exp(max_b - max) elsewhere), the pivot of the merged range and the gap taken against the
    merged max. Rows whose merged max is not finite add the sums unscaled: they are only read for
    NaN (and inf) there. combine_shards folds the blocks of a row through this, in class order;
    the fused linear head folds its class blocks as it makes them."""
    with np.errstate(all="ignore"):
        m = np.maximum(a.max, b.max)
        finite = np.isfinite(m)
        mf = np.where(finite, m, 0.0)
        fa = np.where(a.max == m, 1.0, np.exp(a.max - mf))
        fb = np.where(b.max == m, 1.0, np.exp(b.max - mf))
        plain = a.sumexp + b.sumexp
        # the mass each block's gap is weighted by: its weights (index) or w t' but the pivot's
        mass_a, mass_b = a.weight_sum, b.weight_sum
        if a.kind == "prob":
            mass_a, mass_b = mass_a + a.pivot_weight, mass_b + b.pivot_weight
        gap = a.gap + mass_a * (mf - _shift(a)) + (b.gap + mass_b * (mf - _shift(b)))
        if a.kind == "index":
            # the pivot is the target, in at most one block, and stays out of the sum
            held = b.pivot >= 0
            fields = dict(
                sumexp=np.where(finite, a.sumexp * fa + b.sumexp * fb, plain),
                pivot=np.where(held, b.pivot, a.pivot),
                target_logit=np.where(held, b.target_logit, a.target_logit),
                pivot_weight=np.where(held, b.pivot_weight, a.pivot_weight),
                weight_sum=a.weight_sum + b.weight_sum,
            )
        else:
            # the pivot is the first max class: a's when a holds the max (its classes come
            # first), else b's; the other block's pivot joins the sums
            a_star = finite & (a.max == m)
            b_star = finite & ~a_star
            pa = (a.pivot >= 0).astype(np.float64)
            pb = (b.pivot >= 0).astype(np.float64)
            fields = dict(
                sumexp=np.where(
                    a_star,
                    a.sumexp + (b.sumexp + pb) * fb,
                    np.where(b_star, b.sumexp + (a.sumexp + pa) * fa, plain),
                ),
                pivot=np.where(a_star, a.pivot, np.where(b_star, b.pivot, -1)),
                target_logit=a.target_logit,
                pivot_weight=np.where(
                    a_star, a.pivot_weight, np.where(b_star, b.pivot_weight, 0.0)
                ),
                weight_sum=np.where(
                    a_star,
                    a.weight_sum + mass_b,
                    np.where(b_star, mass_a + b.weight_sum, mass_a + mass_b),
                ),
            )
    return a._replace(max=m, gap=gap, n_block=a.n_block + b.n_block, **fields)


def _shift(s):
    """The shift a block's gap was taken against (ShardStats.gap)."""
    return np.where(np.isfinite(s.max), s.max, 0.0)


def _finish_index(s, mf, eps, floor, zl):
    """Index targets, from the statistics of all of a row's classes: (lse, unweighted row loss,
    p_coef, exact_class, exact_coef, w_y, has_nan) per row. The formulas are
    src_c/xc_row_loss.inc's finish_row."""
    m = s.max
    has_y = s.pivot >= 0
    zy = np.where(has_y, s.target_logit, np.nan)
    wy = np.where(has_y, s.pivot_weight, 0.0)
    y = np.where(has_y, s.pivot, -1)
    s_other = s.sumexp
    has_nan = np.isnan(s_other) | (has_y & np.isnan(zy))
    s_total = s_other + np.where(has_y, np.exp(zy - mf), 0.0)
    log_s = np.where(has_y & (zy == m), np.log1p(s_other), np.log(s_total))
    lse = m + log_s
    row = (1.0 - eps) * wy * ((m - zy) + log_s)
    if eps > 0.0:
        gap = s.gap + s.weight_sum * (mf - _shift(s))
        row = row + floor * (gap + s.weight_sum * log_s)
    row = row + zl * wy * lse * lse
    row = np.where(has_y, row, 0.0)  # ignored rows; their weight makes them 0 anyway
    p_coef_full = (1.0 - eps) * wy + floor * s.weight_sum + 2.0 * zl * wy * lse
    excess = floor * (s.weight_sum - wy) + 2.0 * zl * wy * lse
    p_coef = p_coef_full / s_total
    exact_coef = excess - p_coef_full * (s_other / s_total)
    return lse, row, p_coef, y, exact_coef, wy, has_nan


def _finish_prob(s, mf, zl):
    """Probability targets, as _finish_index: split around the row's first max class (the
    merged pivot)."""
    s_other = s.sumexp
    t_other, t_pivot = s.weight_sum, s.pivot_weight
    t_sum = t_other + t_pivot
    gap = s.gap + t_sum * (mf - _shift(s))
    s_total = 1.0 + s_other
    log_s = np.log1p(s_other)
    lse = s.max + log_s
    row = gap + t_sum * log_s + zl * lse * lse
    p_coef_full = t_sum + 2.0 * zl * lse
    p_coef = p_coef_full / s_total
    exact_coef = t_other + 2.0 * zl * lse - p_coef_full * (s_other / s_total)
    return lse, row, p_coef, s.pivot, exact_coef, None, np.isnan(s_other)


def _denominator(first, sw, w_target):
    """The 'mean' denominator as xentc._validate.mean_denominator computes it on one array."""
    if first.kind == "prob":
        return float(first.max.shape[0] if sw is None else sw.sum())
    counted = first.counted
    w = w_target[counted]
    if sw is None:
        return float(w.sum())
    return float((sw[counted] * w).sum())


def shard_grad(
    logits_block: ArrayLike,
    target: ArrayLike,
    totals: ShardTotals,
    *,
    class_offset: int,
    weight: ArrayLike | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """The gradient of the combined loss with respect to one block of logits.

    Parameters
    ----------
    logits_block, target, class_offset, weight
        As given to `shard_stats` for this block.
    totals : ShardTotals
        `combine_shards`' result for these rows.
    grad_output : float or array_like, optional
        As in `xentc.cross_entropy_with_grad`, for the reduction `totals` was combined with.
    out : ndarray, optional
        Where to write the gradient (the block's shape and dtype, any strides);
        ``out=logits_block`` overwrites the block in place.
    n_threads : int, optional
        As in `xentc.cross_entropy`.

    Returns
    -------
    ndarray
        The block's gradient (`out` when given): the columns of
        `xentc.cross_entropy_with_grad`'s gradient for these classes.

    Raises
    ------
    TypeError
        `totals` not ShardTotals; arguments of the wrong type.
    ValueError
        A block, target kind or rows that do not match `totals`; `out` or `grad_output` that
        do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.3, 0.0]])
    >>> target = np.array([0, 3])
    >>> blocks = [(0, logits[:, :2]), (2, logits[:, 2:])]
    >>> stats = [xentc.shard_stats(b, target, class_offset=o, n_classes=4) for o, b in blocks]
    >>> totals = xentc.combine_shards(stats)
    >>> grad = np.hstack([xentc.shard_grad(b, target, totals, class_offset=o)
    ...                   for o, b in blocks])
    >>> np.allclose(grad, xentc.cross_entropy_with_grad(logits, target)[1])
    True
    """
    plan, scale, row_scale, grad = plan_shard_grad(
        logits_block, target, totals, class_offset, weight, grad_output, out, n_threads
    )
    if plan.n_rows == 0:
        return grad
    if totals.reduction == "mean":
        scale = mean_grad_scale(scale, totals.denominator)
    row = totals.row_scale * scale
    if row_scale is not None:
        row = row * row_scale
    counted = totals.row_scale != 0
    with np.errstate(all="ignore"):
        p_scale = row * totals.p_coef
        exact_grad = row * totals.exact_coef
    use_fill = (~counted | totals.nonfinite).astype(np.uint8)
    fill = np.where(totals.nonfinite, np.nan, 0.0)
    _kernels.shard_grad(
        plan,
        grad=as_matrix(grad),
        row_max=np.where(np.isfinite(totals.row_max), totals.row_max, 0.0),
        p_scale=p_scale,
        t_scale=row * totals.t_keep,
        t_floor=row * totals.floor,
        exact_grad=exact_grad,
        fill=fill,
        exact_class=totals.exact_class,
        use_fill=use_fill,
    )
    return grad
