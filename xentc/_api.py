"""The public functions: validate -> allocate -> run the kernel -> reduce.

Semantics: docs/semantics.md (the contract), with torch.nn.functional.cross_entropy as the
oracle (classes on the last axis); deviations from torch are listed there.
"""

from __future__ import annotations

import math

import numpy as np

from . import _kernels
from ._typing import ArrayLike, DTypeLike, FloatArray, Loss, LossLse, Reduction
from ._validate import (
    as_matrix,
    check_grad_output,
    check_lse_dtype,
    check_lse_in,
    check_n_threads,
    check_out,
    mean_denominator,
    mean_grad_scale,
    mean_loss,
    plan_cross_entropy,
    plan_rows,
)


def _run(
    plan,
    *,
    grad=None,
    grad_fresh=False,
    grad_scale=1.0,
    row_grad_scale=None,
    return_lse=False,
    denominator=None,
    lse_dtype=None,
):
    """Run the fused kernel; returns (loss as the reduction asks, lse rows or None).
    denominator: the 'mean' denominator when the caller has it already (else computed here).
    lse_dtype: the lse's dtype; None: the kernel's row dtype (float64 is the other choice)."""
    # row results in the kernel's dtype: float32 for 16-bit logits, whose losses and lse are
    # float32 accumulations (rounding them to 16 bits would throw away digits they have)
    loss_rows = np.empty(plan.n_rows, dtype=plan.row_dtype) if plan.reduction == "none" else None
    lse = np.empty(plan.n_rows, dtype=lse_dtype or plan.row_dtype) if return_lse else None
    total = _kernels.xent(
        plan,
        grad=None if grad is None else as_matrix(grad),
        grad_fresh=grad_fresh,
        grad_scale=grad_scale,
        row_grad_scale=row_grad_scale,
        loss_out=loss_rows,
        lse_out=lse,
        want_sum=plan.reduction != "none",
    )
    if plan.reduction == "none":
        loss = loss_rows.reshape(plan.lead_shape)
    elif plan.reduction == "sum":
        loss = float(total)
    else:
        if denominator is None:
            denominator = mean_denominator(plan)
        loss = mean_loss(total, denominator)
    return loss, None if lse is None else lse.reshape(plan.lead_shape)


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    return_lse: bool = False,
    lse_dtype: DTypeLike | None = None,
    n_threads: int | None = None,
) -> Loss | LossLse:
    """Softmax cross-entropy of `logits` against `target`, classes on the last axis.

    The options follow ``torch.nn.functional.cross_entropy``; the formulas, the NaN and inf rules
    and the accuracy are on the semantics page of the docs.

    Parameters
    ----------
    logits : array_like, shape (..., C)
        float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``; 16-bit logits are
        computed in float32), C >= 1, any strides. Read in place, never copied (except when
        byte-swapped or misaligned).
    target : array_like
        Class indices of shape ``logits.shape[:-1]`` (any integer dtype; each in ``[0, C)`` or
        equal to `ignore_index`), or class probabilities of shape ``logits.shape`` (float32 or
        float64). The dtype decides which.
    weight : array_like, shape (C,), optional
        Per-class weights (floating), as torch's.
    sample_weight : array_like, shape logits.shape[:-1], optional
        Per-row weights >= 0 (floating): each row's loss is multiplied by its weight, and the
        ``'mean'`` divides by the weighted count.
    ignore_index : int, default -100
        The index target of rows that do not count (index targets only).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'``: the (weighted) mean over the counted rows; ``'sum'``; ``'none'``: one loss
        per row.
    label_smoothing : float, default 0.0
        In [0, 1]: the target becomes ``(1 - label_smoothing) * target + label_smoothing / C``.
    z_loss : float, default 0.0
        >= 0: adds ``z_loss * lse**2`` to each counted row (PaLM's z-loss).
    softcap : float, optional
        None or > 0: the loss is that of ``softcap * tanh(z' / softcap)``.
    logit_scale : float, default 1.0
        Finite: ``z' = logit_scale * logits`` before the softcap.
    return_lse : bool, default False
        Also return each row's log-sum-exp (of the transformed logits).
    lse_dtype : None or numpy.float64, optional
        The lse's dtype: None, the logits' (float32 for 16-bit logits); ``np.float64`` keeps
        every digit the kernel computed, as `cross_entropy_grad` takes it.
    n_threads : int, optional
        Threads for the kernel (>= 1). None: a threadpoolctl limit, else ``OMP_NUM_THREADS``,
        else the usable cores. The result is bitwise the same for every count.

    Returns
    -------
    loss : float or ndarray
        A Python float for ``'mean'`` and ``'sum'``; for ``'none'`` an array of shape
        ``logits.shape[:-1]`` in the logits' dtype (float32 for 16-bit logits). ``'mean'`` with
        nothing counted is NaN.
    lse : ndarray
        Only with ``return_lse=True``: shape ``logits.shape[:-1]``, in `lse_dtype`, ignored
        rows included.

    Raises
    ------
    TypeError
        A dtype xentc does not take (integer or complex logits, a bool target, integer weights,
        16-bit probability targets), or an option of the wrong type.
    ValueError
        Shapes that do not fit, a target index out of range, C == 0, an option out of its range
        (`reduction`, `label_smoothing`, `z_loss`, `softcap`, `logit_scale`, `n_threads`), a
        negative or NaN sample weight.

    See Also
    --------
    cross_entropy_with_grad : the loss and its gradient in one pass.
    cross_entropy_grad : the gradient later, from the lse this call returned.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=np.float32)
    >>> target = np.array([0, 1])
    >>> round(xentc.cross_entropy(logits, target), 4)
    0.3185
    >>> np.round(xentc.cross_entropy(logits, target, reduction="none"), 4)
    array([0.417, 0.22 ], dtype=float32)

    A target equal to `ignore_index` does not count; probabilities work as well:

    >>> round(xentc.cross_entropy(logits, np.array([0, -100])), 4)
    0.417
    >>> soft = np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0]])
    >>> loss, lse = xentc.cross_entropy(logits, soft, return_lse=True)
    >>> np.round(lse, 4)
    array([2.417, 2.72 ], dtype=float32)
    """
    plan = plan_cross_entropy(
        logits,
        target,
        weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        n_threads,
        softcap,
        logit_scale,
    )
    loss, lse = _run(plan, return_lse=return_lse, lse_dtype=check_lse_dtype(lse_dtype))
    return (loss, lse) if return_lse else loss


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    return_lse: bool = False,
    n_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Loss, np.ndarray] | tuple[Loss, FloatArray, np.ndarray]:
    """`cross_entropy` and its gradient with respect to the logits, in one fused pass.

    Parameters
    ----------
    logits, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss
        As for `cross_entropy`.
    softcap, logit_scale, return_lse, n_threads
        As for `cross_entropy`.
    grad_output : float or array_like, optional
        The cotangent of the vector-Jacobian product: the gradient is multiplied by it (the loss
        is not). None means 1.0 (ones for ``'none'``); a scalar, or for ``'none'`` an array of
        shape ``logits.shape[:-1]``. ``reduction="sum"`` with ``grad_output=1 / n_tokens``
        scales micro-batches for gradient accumulation.
    out : ndarray, optional
        Where to write the gradient: the logits' shape and dtype, writeable, any strides.
        ``out=logits`` overwrites the logits with their gradient (no extra memory). Nothing is
        written to it when an error is raised.

    Returns
    -------
    loss : float or ndarray
        As `cross_entropy` returns it.
    lse : ndarray
        Only with ``return_lse=True``: as `cross_entropy` returns it, computed before the
        gradient overwrites the logits.
    grad : ndarray
        The gradient, the logits' shape and dtype (`out` itself when given). It is with respect
        to the logits as given, through `softcap` and `logit_scale`; for 16-bit logits it is
        computed in float32 and rounded once to their dtype.

    Raises
    ------
    TypeError
        As `cross_entropy`; also `out` not an ndarray, `grad_output` not real.
    ValueError
        As `cross_entropy`; also `grad_output` of the wrong shape, `out` of the wrong shape or
        dtype, read-only, or overlapping an input other than being exactly the logits.

    See Also
    --------
    cross_entropy : the loss alone.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=np.float32)
    >>> target = np.array([0, 1])
    >>> loss, grad = xentc.cross_entropy_with_grad(logits, target)
    >>> round(loss, 4)
    0.3185
    >>> np.round(grad, 4)  # (softmax - onehot) / 2 rows
    array([[-0.1705,  0.1212,  0.0493],
           [ 0.0543, -0.0988,  0.0445]], dtype=float32)

    In place: the gradient overwrites the logits.

    >>> loss, grad = xentc.cross_entropy_with_grad(logits, target, out=logits)
    >>> grad is logits
    True
    """
    plan = plan_cross_entropy(
        logits,
        target,
        weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        n_threads,
        softcap,
        logit_scale,
    )
    scale, row_scale = check_grad_output(grad_output, plan.reduction, plan.lead_shape)
    grad = check_out(
        out,
        logits,
        plan.dtype,
        {
            "target": target,
            "weight": weight,
            "sample_weight": sample_weight,
            "grad_output": grad_output,
        },
    )
    scale, denominator, nothing_counts = _mean_scale(plan, scale)
    loss, lse = _run(
        plan,
        grad=None if nothing_counts else grad,
        grad_fresh=out is None,
        grad_scale=scale,
        row_grad_scale=row_scale,
        return_lse=return_lse,
        denominator=denominator,
    )
    if nothing_counts:
        grad[...] = 0
    return (loss, lse, grad) if return_lse else (loss, grad)


def _mean_scale(plan, scale):
    """(gradient scale, 'mean' denominator or None, whether nothing counts) for a plan."""
    if plan.reduction != "mean":
        return scale, None, False
    denominator = mean_denominator(plan)
    # A zero denominator (every row ignored or weighted 0) gives a NaN mean and, as torch,
    # an all-zero gradient: also for a counted row of class weight 0 holding NaN, to which
    # the kernel would give its NaN gradient row. So the kernel computes the loss (and lse)
    # only, and the zeros are written after it (after the lse, also with out=logits).
    return mean_grad_scale(scale, denominator), denominator, denominator == 0


def cross_entropy_grad(
    logits: ArrayLike,
    target: ArrayLike,
    lse: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    n_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The gradient `cross_entropy_with_grad` returns, later, from the lse of the forward call.

    For frameworks that run the loss and its gradient at different times (autograd): the
    forward, ``cross_entropy(..., return_lse=True, lse_dtype=np.float64)``, keeps each row's
    log-sum-exp; this call then writes the gradient in one pass over the logits,
    ``p_j = exp(z_j - lse_i)``, with no max or sum pass. With the forward's logits, target and
    options, the result is the gradient `cross_entropy_with_grad` gives, within rounding (that
    call divides ``exp(z_j - max_i)`` by the row's sum instead: the two differ in the last bit
    or two, well inside the accuracy of the semantics page).

    Parameters
    ----------
    logits, target
        As `cross_entropy`'s; the same arrays the forward call had.
    lse : array_like of float64, shape logits.shape[:-1]
        The forward's lse, in float64 (or flattened to one row per entry). It is trusted, not
        recomputed: an lse of other logits gives a wrong gradient, not an error.
    weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        As `cross_entropy`'s; the forward call's options.
    logit_scale, n_threads
        As `cross_entropy`'s.
    grad_output, out
        As `cross_entropy_with_grad`'s (``out=logits`` overwrites the logits with the gradient).

    Returns
    -------
    grad : ndarray
        Shape and dtype of `logits` (`out` when given).

    Raises
    ------
    TypeError, ValueError
        As `cross_entropy_with_grad`; also an `lse` that is not float64 or not one per row.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=np.float32)
    >>> target = np.array([0, 1])
    >>> loss, lse = xentc.cross_entropy(logits, target, return_lse=True, lse_dtype=np.float64)
    >>> grad = xentc.cross_entropy_grad(logits, target, lse)
    >>> bool(np.allclose(grad, xentc.cross_entropy_with_grad(logits, target)[1], atol=1e-7))
    True
    """
    plan = plan_cross_entropy(
        logits,
        target,
        weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        n_threads,
        softcap,
        logit_scale,
    )
    scale, row_scale = check_grad_output(grad_output, plan.reduction, plan.lead_shape)
    lse_in = check_lse_in(lse, plan.lead_shape)
    grad = check_out(
        out,
        logits,
        plan.dtype,
        {
            "target": target,
            "weight": weight,
            "sample_weight": sample_weight,
            "grad_output": grad_output,
            "lse": lse,
        },
    )
    scale, _, nothing_counts = _mean_scale(plan, scale)
    if nothing_counts:
        grad[...] = 0
    elif plan.n_rows:
        _kernels.xent_backward(
            plan,
            lse_in,
            grad=as_matrix(grad),
            grad_fresh=out is None,
            grad_scale=scale,
            row_grad_scale=row_scale,
        )
    return grad


def logsumexp(x: ArrayLike, axis: int = -1) -> FloatArray:
    """``log(sum(exp(x), axis))``, as ``scipy.special.logsumexp``, without overflow.

    Parameters
    ----------
    x : array_like
        float32 or float64 (the result has x's dtype); float16 and bfloat16 are widened exactly
        to float32 and the result is float32 (it keeps digits a 16-bit one would drop).
    axis : int, default -1
        The axis to reduce.

    Returns
    -------
    ndarray
        x's shape without `axis`. An empty axis gives -inf; a row of -inf gives -inf, a row with
        +inf gives +inf, a row with NaN gives NaN.

    Raises
    ------
    TypeError
        x not floating, or `axis` not an int.
    numpy.exceptions.AxisError
        `axis` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> x = np.log(np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]]))
    >>> np.round(xentc.logsumexp(x), 6)
    array([2.079442, 1.098612])
    >>> float(xentc.logsumexp(np.array([1000.0, 1000.0])))  # no overflow
    1000.6931471805599
    """
    _, rows, _ = plan_rows(x, axis)
    lead_shape = rows.shape[:-1]
    out = np.empty(math.prod(lead_shape), dtype=rows.dtype)
    if rows.shape[-1] == 0:
        out.fill(-np.inf)  # the log of an empty sum
    elif out.size:
        _kernels.lse_rows(as_matrix(rows), out.size, rows.shape[-1], out, check_n_threads(None))
    return out.reshape(lead_shape)


def _softmax_family(x, axis, log_softmax):
    arr, rows, axis = plan_rows(x, axis)
    out = np.empty(arr.shape, dtype=rows.dtype)
    out_rows = np.moveaxis(out, axis, -1)
    n_rows = math.prod(out_rows.shape[:-1])
    if out.size:
        _kernels.softmax_rows(
            as_matrix(rows),
            n_rows,
            rows.shape[-1],
            as_matrix(out_rows),
            log_softmax,
            check_n_threads(None),
        )
    return out


def softmax(x: ArrayLike, axis: int = -1) -> FloatArray:
    """``exp(x) / sum(exp(x), axis)``, as ``scipy.special.softmax``.

    Parameters
    ----------
    x : array_like
        float32 or float64 (the result has x's dtype); 16-bit x gives float32.
    axis : int, default -1
        The axis to normalise over.

    Returns
    -------
    ndarray
        x's shape; each slice along `axis` sums to 1.

    Raises
    ------
    TypeError
        x not floating, or `axis` not an int.
    numpy.exceptions.AxisError
        `axis` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> np.round(xentc.softmax(np.array([[0.0, np.log(3.0)], [5.0, 5.0]])), 6)
    array([[0.25, 0.75],
           [0.5 , 0.5 ]])
    """
    return _softmax_family(x, axis, False)


def log_softmax(x: ArrayLike, axis: int = -1) -> FloatArray:
    """``x - logsumexp(x, axis)``, as ``scipy.special.log_softmax``, accurate for large x.

    Parameters
    ----------
    x : array_like
        float32 or float64 (the result has x's dtype); 16-bit x gives float32.
    axis : int, default -1
        The axis to normalise over.

    Returns
    -------
    ndarray
        x's shape.

    Raises
    ------
    TypeError
        x not floating, or `axis` not an int.
    numpy.exceptions.AxisError
        `axis` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> np.round(xentc.log_softmax(np.array([1e30, 1e30], dtype=np.float32)), 6)
    array([-0.693147, -0.693147], dtype=float32)
    """
    return _softmax_family(x, axis, True)
