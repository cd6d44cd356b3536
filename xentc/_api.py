"""The public functions: validate -> allocate -> run the kernel -> reduce.

Semantics: shared/spec/api.md, with torch.nn.functional.cross_entropy as the oracle (classes on
the last axis); the README's "Semantics" section lists the details, deviations included.
"""

import math

import numpy as np

from . import _kernels
from ._validate import (
    as_matrix,
    check_grad_output,
    check_lse_in,
    check_n_threads,
    check_out,
    mean_denominator,
    plan_cross_entropy,
    plan_rows,
)


def _run(plan, *, grad=None, grad_fresh=False, grad_scale=1.0, row_grad_scale=None,
         return_lse=False, denominator=None, lse_dtype=None):
    """Run the fused kernel; returns (loss as the reduction asks, lse rows or None).
    denominator: the 'mean' denominator when the caller has it already (else computed here).
    lse_dtype: the lse's dtype; None: the kernel's row dtype (float64 is the other choice)."""
    # row results in the kernel's dtype: float32 for 16-bit logits, whose losses and lse are
    # float32 accumulations (rounding them to 16 bits would throw away digits they have)
    loss_rows = np.empty(plan.n_rows, dtype=plan.row_dtype) if plan.reduction == "none" else None
    lse = np.empty(plan.n_rows, dtype=lse_dtype or plan.row_dtype) if return_lse else None
    total = _kernels.xent(
        plan.logits, plan.n_rows, plan.n_classes, target_index=plan.target_index,
        ignore_index=plan.ignore_index, target_prob=plan.target_prob,
        class_weight=plan.class_weight, sample_weight=plan.sample_weight,
        label_smoothing=plan.label_smoothing, z_loss=plan.z_loss,
        grad=None if grad is None else as_matrix(grad), grad_fresh=grad_fresh,
        grad_scale=grad_scale,
        row_grad_scale=row_grad_scale, loss_out=loss_rows, lse_out=lse,
        want_sum=plan.reduction != "none", n_threads=plan.n_threads,
        logit_scale=plan.logit_scale, softcap=plan.softcap, logits_half=plan.half)
    if plan.reduction == "none":
        loss = loss_rows.reshape(plan.lead_shape)
    elif plan.reduction == "sum":
        loss = float(total)
    else:
        if denominator is None:
            denominator = mean_denominator(plan)
        loss = total / denominator if denominator != 0 else math.nan
    return loss, None if lse is None else lse.reshape(plan.lead_shape)


def cross_entropy(logits, target, *, weight=None, sample_weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                  logit_scale=1.0, return_lse=False, n_threads=None):
    """Softmax cross-entropy of `logits` (shape (..., C), classes last) against `target`.

    logits: float32, float64, or 16-bit (float16, ml_dtypes.bfloat16: computed in float32).
    target: class indices of shape logits.shape[:-1] (any integer dtype), or class probabilities
    of shape logits.shape (float32/float64). Options as torch.nn.functional.cross_entropy
    (weight, ignore_index, reduction, label_smoothing), plus sample_weight (per-row weights),
    z_loss (adds z_loss * lse**2 per counted row), logit_scale and softcap (the loss is that of
    z'' = softcap * tanh(logit_scale * z / softcap), or of logit_scale * z without a softcap)
    and return_lse (also return each row's log-sum-exp, of z''). Returns a Python float for
    'mean'/'sum', an ndarray of shape logits.shape[:-1] for 'none' (float32 for 16-bit logits);
    (loss, lse) with return_lse=True.
    """
    plan = plan_cross_entropy(logits, target, weight, sample_weight, ignore_index, reduction,
                              label_smoothing, z_loss, n_threads, softcap, logit_scale)
    loss, lse = _run(plan, return_lse=return_lse)
    return (loss, lse) if return_lse else loss


def cross_entropy_with_grad(logits, target, *, weight=None, sample_weight=None,
                            ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                            softcap=None, logit_scale=1.0, return_lse=False, n_threads=None,
                            grad_output=None, out=None):
    """cross_entropy and its gradient with respect to the logits, in one fused pass.

    grad_output: the vector-Jacobian product's cotangent (None: 1.0, or ones for 'none'; a scalar,
    or for 'none' an array of shape logits.shape[:-1]). out: where to write the gradient (same
    shape and dtype as logits, writeable, any strides); out=logits overwrites the logits in place.
    The gradient is with respect to the logits as given, through softcap and logit_scale; for
    16-bit logits it is computed in float32 and rounded to their dtype (to nearest even).
    Returns (loss, grad), or (loss, lse, grad) with return_lse=True.
    """
    plan = plan_cross_entropy(logits, target, weight, sample_weight, ignore_index, reduction,
                              label_smoothing, z_loss, n_threads, softcap, logit_scale)
    scale, row_scale = check_grad_output(grad_output, plan.reduction, plan.lead_shape)
    grad = check_out(out, logits, plan.dtype, {
        "target": target, "weight": weight, "sample_weight": sample_weight,
        "grad_output": grad_output})
    scale, denominator, nothing_counts = _mean_scale(plan, scale)
    loss, lse = _run(plan, grad=None if nothing_counts else grad, grad_fresh=out is None,
                     grad_scale=scale, row_grad_scale=row_scale, return_lse=return_lse,
                     denominator=denominator)
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
    if denominator == 0:
        return scale, denominator, True
    return scale / denominator, denominator, False


# ---- the forward/backward split of xentc.torch (private) -------------------------------------
# Autograd runs the loss and its gradient at different times. The forward keeps each row's
# log-sum-exp in float64; the backward mode of the kernel (src_c/xc_api.h, lse_in) then writes
# the gradient in one pass over the logits, p_j = exp(z_j - lse_i), with no max or sum pass.
# Same arguments, same validation plan, same semantics as cross_entropy_with_grad.


def _cross_entropy_lse64(logits, target, *, weight=None, sample_weight=None, ignore_index=-100,
                         reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                         logit_scale=1.0, n_threads=None):
    """cross_entropy -> (loss, lse): lse of shape logits.shape[:-1] in float64, whatever the
    logits' dtype, for _grad_from_lse."""
    plan = plan_cross_entropy(logits, target, weight, sample_weight, ignore_index, reduction,
                              label_smoothing, z_loss, n_threads, softcap, logit_scale)
    return _run(plan, return_lse=True, lse_dtype=np.float64)


def _grad_from_lse(logits, target, lse, *, weight=None, sample_weight=None, ignore_index=-100,
                   reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                   logit_scale=1.0, n_threads=None, grad_output=None, out=None):
    """The gradient cross_entropy_with_grad returns, from the float64 lse that
    _cross_entropy_lse64 returned for the same logits and options (not checked: a wrong lse
    gives a wrong gradient). out=logits overwrites the logits with it."""
    plan = plan_cross_entropy(logits, target, weight, sample_weight, ignore_index, reduction,
                              label_smoothing, z_loss, n_threads, softcap, logit_scale)
    scale, row_scale = check_grad_output(grad_output, plan.reduction, plan.lead_shape)
    lse_in = check_lse_in(lse, plan.lead_shape)
    grad = check_out(out, logits, plan.dtype, {
        "target": target, "weight": weight, "sample_weight": sample_weight,
        "grad_output": grad_output, "lse": lse})
    scale, _, nothing_counts = _mean_scale(plan, scale)
    if nothing_counts:
        grad[...] = 0
    elif plan.n_rows:
        _kernels.xent(
            plan.logits, plan.n_rows, plan.n_classes, target_index=plan.target_index,
            ignore_index=plan.ignore_index, target_prob=plan.target_prob,
            class_weight=plan.class_weight, sample_weight=plan.sample_weight,
            label_smoothing=plan.label_smoothing, z_loss=plan.z_loss, grad=as_matrix(grad),
            grad_fresh=out is None, grad_scale=scale, row_grad_scale=row_scale, loss_out=None,
            lse_out=None, want_sum=False, n_threads=plan.n_threads,
            logit_scale=plan.logit_scale, softcap=plan.softcap, logits_half=plan.half,
            lse_in=lse_in)
    return grad


def logsumexp(x, axis=-1):
    """log(sum(exp(x), axis)), as scipy.special.logsumexp, in x's dtype (float32/float64).
    16-bit x (float16, bfloat16) is upcast exactly to float32 and the result is float32, as
    cross_entropy's lse is: the float32 result keeps digits a 16-bit one would drop (the same
    for softmax and log_softmax)."""
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
        _kernels.softmax_rows(as_matrix(rows), n_rows, rows.shape[-1], as_matrix(out_rows),
                              log_softmax, check_n_threads(None))
    return out


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x), axis), as scipy.special.softmax, in x's dtype."""
    return _softmax_family(x, axis, False)


def log_softmax(x, axis=-1):
    """x - logsumexp(x, axis), as scipy.special.log_softmax, in x's dtype."""
    return _softmax_family(x, axis, True)
