"""A short, vectorised float64 cross-entropy for test_errors/layouts/edge_cases/threads.

It follows /work/notes/semantics.md for finite logits and nothing more: tests of NaN/inf rows
check the spec's values directly. (The thorough, slow reference is tests/reference.py.)
"""

from typing import NamedTuple

import numpy as np
from conftest import TOL


class Result(NamedTuple):
    loss: "float | np.ndarray"  # like xentc: a float for 'mean'/'sum', an array for 'none'
    lse: np.ndarray  # shape logits.shape[:-1]
    grad: np.ndarray  # shape logits.shape
    unit: float  # multiply a gradient by this to scale it to a unit-size loss (spec tolerance)


def logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def _lse_minus(z):
    """(lse - z, lse) per row, with lse - z formed as log(sum) - (z - max): no cancellation when
    |z| is huge next to the loss (1e300 logits, confident rows)."""
    shifted = z - z.max(axis=-1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return log_sum - shifted, (z.max(axis=-1, keepdims=True) + log_sum)[:, 0]


def cross_entropy(
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
):
    shape = np.shape(logits)
    n_classes = shape[-1]
    z = np.asarray(logits, np.float64).reshape(-1, n_classes)
    n_rows = z.shape[0]
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    s = np.ones(n_rows) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    eps = label_smoothing
    lse_minus_z, lse = _lse_minus(z) if n_rows else (z, np.zeros(0))
    target = np.asarray(target)

    # Every variant is loss_i = s_i * [sum_k q_ik (lse_i - z_ik) + z_loss * r_i * lse_i**2], with
    # d/dz_ij = s_i * [(sum_k q_ik + 2 z_loss r_i lse_i) p_ij - q_ij].
    if target.dtype.kind == "f":
        t = np.asarray(target, np.float64).reshape(-1, n_classes)
        q = w * ((1 - eps) * t + eps / n_classes)
        r = np.ones(n_rows)
        counted = np.ones(n_rows, bool)
        denom = s.sum()
    else:
        y = target.ravel().astype(np.int64)  # exact for every value a valid target can hold
        counted = y != ignore_index
        y = np.where(counted, y, 0)
        r = w[y]
        q = np.tile(w * eps / n_classes, (n_rows, 1))
        q[np.arange(n_rows), y] += (1 - eps) * r
        denom = (s * r)[counted].sum()
    counted &= s > 0  # a zero sample weight takes the row out entirely (semantics.md)

    p = np.exp(-lse_minus_z)
    z_term = z_loss * r * lse**2 if z_loss else 0.0  # skipped at 0: lse**2 overflows at 1e300
    loss = s * ((q * lse_minus_z).sum(-1) + z_term)
    grad = s[:, None] * ((q.sum(-1) + 2 * z_loss * r * lse)[:, None] * p - q)
    loss = np.where(counted, loss, 0.0)
    grad = np.where(counted[:, None], grad, 0.0)

    go = 1.0 if grad_output is None else np.asarray(grad_output, np.float64)
    # the largest per-row gradient multiplier, for the spec's unit-size-loss scaling
    biggest = np.max(np.abs(np.ravel(go)) * s * w.max(), initial=0.0)
    if reduction == "none":
        out = loss.reshape(shape[:-1])
        grad = grad * np.reshape(go, (-1, 1))
        unit = 1.0
    elif reduction == "sum":
        out = float(loss.sum())
        grad = grad * go
        unit = 1.0
    else:
        out = float(loss.sum() / denom) if denom > 0 else float("nan")
        grad = grad * go / denom if denom > 0 else np.zeros_like(grad)
        unit = float(denom) if denom > 0 else 1.0
    unit = unit / biggest if biggest else unit
    return Result(out, lse.reshape(shape[:-1]), grad.reshape(shape), unit)


def assert_close(dtype, got_loss, ref, err_msg, got_grad=None, got_lse=None):
    """Compare xentc's results with a `Result` at the spec's tolerance for `dtype`."""
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(
        got_loss, ref.loss, rtol=tol["rtol"], atol=tol["atol"], err_msg=f"loss: {err_msg}"
    )
    if got_lse is not None:
        np.testing.assert_allclose(
            got_lse, ref.lse, rtol=tol["rtol"], atol=tol["atol"], err_msg=f"lse: {err_msg}"
        )
    if got_grad is not None:
        np.testing.assert_allclose(
            np.asarray(got_grad, np.float64) * ref.unit,
            ref.grad * ref.unit,
            rtol=0,
            atol=tol["grad_atol"],
            err_msg=f"grad: {err_msg}",
        )
