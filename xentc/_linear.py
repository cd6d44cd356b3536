"""Fused linear + cross-entropy: a language model's loss without its N x V logits (issue 19).

The logits of an output layer, `hidden @ weight.T + bias`, are N x V: 4096 tokens x 128256
classes of float32 is 2 GB, and their gradient as much again. Here they are made one chunk of
rows at a time, in one reused buffer of at most `chunk_bytes`:

    forward, per chunk c of rows:   Z_c = H_c W^T + b          (BLAS: NumPy's matmul)
                                    loss_c (and G_c = dL/dZ_c, written over Z_c) by xentc's
                                    fused kernel, with the whole problem's 'mean' denominator
    backward, same chunk, Z_c = G_c: dH_c  = G_c W             (BLAS)
                                    dW   += G_c^T H_c          (BLAS, a block of classes at a time)
                                    db   += column sums of G_c

so the extra memory is the chunk buffer plus the gradients returned, and the forward-only call
needs no gradient memory at all. Options are those of xentc.cross_entropy, applied to the logits
of each chunk; each chunk's call is the core function itself, so semantics cannot drift.

The weight gradient is a sum over chunks: its rounding depends on the chunk size (not on
n_threads), and stays within float32 tolerance of the float64 sum.
"""

import math

import numpy as np

from . import _api
from ._validate import (
    check_float_dtype,
    check_grad_output,
    mean_denominator,
    plan_cross_entropy,
)

# The default budget of the chunk of logits: large enough that each chunk's matrix product
# reads the weight (V x D) once for hundreds of rows (the products stay compute bound), small
# beside the N x V it replaces.
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Classes per block of the weight gradient's accumulation: dW[block] += G_c[:, block]^T H_c needs
# a temporary of that many rows of D (NumPy's matmul has no beta = 1 of BLAS's gemm).
WEIGHT_GRAD_BLOCK = 2048


def _check_operands(hidden, weight, bias):
    """(hidden as (N, D), weight, bias) checked: floating, same dtype, shapes that fit."""
    if not isinstance(hidden, np.ndarray):
        hidden = np.asarray(hidden)
    if not isinstance(weight, np.ndarray):
        weight = np.asarray(weight)
    check_float_dtype(hidden.dtype, "hidden")
    check_float_dtype(weight.dtype, "weight")
    if hidden.ndim < 1:
        raise ValueError("hidden must have at least one axis (the features, last); got a 0-d "
                         "array")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] < 1:
        raise ValueError(f"weight must have shape (V, D) with D = hidden.shape[-1] = "
                         f"{hidden.shape[-1]} and V >= 1 (torch.nn.Linear's layout); got "
                         f"{weight.shape}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight must have hidden's dtype {hidden.dtype}; got {weight.dtype}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias must have hidden's dtype {hidden.dtype}; got {bias.dtype}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape (V,) = ({weight.shape[0]},); got "
                             f"{bias.shape}")
    return hidden, weight, bias


def _chunk_rows(chunk_bytes, n_classes, itemsize, n_rows):
    if chunk_bytes is None:
        chunk_bytes = DEFAULT_CHUNK_BYTES
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, (int, np.integer)):
        raise TypeError(f"chunk_bytes must be an int; got {chunk_bytes!r}")
    if chunk_bytes < n_classes * itemsize:
        raise ValueError(f"chunk_bytes must hold at least one row of logits ({n_classes} x "
                         f"{itemsize} bytes = {n_classes * itemsize}); got {chunk_bytes}")
    return max(1, min(n_rows, int(chunk_bytes) // (n_classes * itemsize)))


class _Problem:
    """The checked call: the flattened operands, the options, and a plan of the whole problem
    (validated against the logits' shape without the logits themselves)."""

    def __init__(self, hidden, weight, target, bias, class_weight, sample_weight, ignore_index,
                 reduction, label_smoothing, z_loss, softcap, logit_scale, n_threads,
                 chunk_bytes):
        hidden, weight, bias = _check_operands(hidden, weight, bias)
        self.lead_shape = hidden.shape[:-1]
        self.n_rows = math.prod(self.lead_shape)
        self.n_classes = weight.shape[0]
        # Every check of the core on a stand-in for the logits: a broadcast zero of their shape
        # and dtype, which holds no memory (and is never read).
        stand_in = np.broadcast_to(np.zeros((), hidden.dtype), (*self.lead_shape, self.n_classes))
        self.plan = plan_cross_entropy(stand_in, target, class_weight, sample_weight,
                                       ignore_index, reduction, label_smoothing, z_loss,
                                       n_threads, softcap, logit_scale)
        self.hidden = hidden.reshape(self.n_rows, hidden.shape[-1])
        self.weight, self.bias = weight, bias
        t = np.asarray(target)
        self.target = t.reshape(self.n_rows, *t.shape[len(self.lead_shape):])
        s = None if sample_weight is None else np.asarray(sample_weight).reshape(self.n_rows)
        self.options = dict(weight=class_weight, ignore_index=ignore_index,
                            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                            logit_scale=logit_scale, n_threads=n_threads)
        self.sample_weight = s
        self.rows = _chunk_rows(chunk_bytes, self.n_classes, hidden.itemsize, self.n_rows)

    def chunks(self):
        for start in range(0, self.n_rows, self.rows):
            yield slice(start, min(start + self.rows, self.n_rows))

    def logits(self, rows, buffer):
        """Z = H[rows] W^T + b, into the front of `buffer`."""
        z = buffer[: rows.stop - rows.start]
        np.matmul(self.hidden[rows], self.weight.T, out=z)
        if self.bias is not None:
            z += self.bias
        return z

    def chunk_options(self, rows):
        s = None if self.sample_weight is None else self.sample_weight[rows]
        return dict(self.options, sample_weight=s)


def _run(problem, return_lse, grads=None, scale=1.0, row_scale=None):
    """The loop over chunks of rows: (loss as the reduction asks, lse or None). With `grads`
    (grad_hidden, grad_weight, grad_bias or None), the chunk's gradient is written over its
    logits and taken back through the projection into them."""
    plan, dtype = problem.plan, problem.hidden.dtype
    buffer = np.empty((problem.rows, problem.n_classes), dtype)
    loss_rows = np.empty(problem.n_rows, dtype) if plan.reduction == "none" else None
    lse = np.empty(problem.n_rows, dtype) if return_lse else None
    totals = []
    for rows in problem.chunks():
        z = problem.logits(rows, buffer)
        kw = dict(problem.chunk_options(rows), return_lse=True,
                  reduction="none" if loss_rows is not None else "sum")
        if grads is None:
            part, part_lse = _api.cross_entropy(z, problem.target[rows], **kw)
        else:
            part, part_lse, g = _api.cross_entropy_with_grad(
                z, problem.target[rows], out=z,
                grad_output=scale if row_scale is None else row_scale[rows], **kw)
            _backward(problem, rows, g, *grads)
        if loss_rows is not None:
            loss_rows[rows] = part
        else:
            totals.append(part)
        if lse is not None:
            lse[rows] = part_lse
    if plan.reduction == "none":
        loss = loss_rows.reshape(problem.lead_shape)
    elif plan.reduction == "sum":
        loss = math.fsum(totals)
    else:
        denominator = mean_denominator(plan)
        loss = math.fsum(totals) / denominator if denominator != 0 else math.nan
    return loss, None if lse is None else lse.reshape(problem.lead_shape)


def _backward(problem, rows, g, grad_hidden, grad_weight, grad_bias):
    """From G = dL/dZ of a chunk of rows: dH = G W for those rows; dW += G^T H and db += the
    column sums of G, in the operands' dtype."""
    h = problem.hidden[rows]
    np.matmul(g, problem.weight, out=grad_hidden[rows])
    block = np.empty((min(WEIGHT_GRAD_BLOCK, problem.n_classes), h.shape[1]), h.dtype)
    for first in range(0, problem.n_classes, block.shape[0]):
        classes = slice(first, min(first + block.shape[0], problem.n_classes))
        part = block[: classes.stop - classes.start]
        np.matmul(g[:, classes].T, h, out=part)
        grad_weight[classes] += part
    if grad_bias is not None:
        grad_bias += g.sum(axis=0)


def linear_cross_entropy(hidden, weight, target, *, bias=None, class_weight=None,
                         sample_weight=None, ignore_index=-100, reduction="mean",
                         label_smoothing=0.0, z_loss=0.0, softcap=None, logit_scale=1.0,
                         return_lse=False, chunk_bytes=None, n_threads=None):
    """xentc.cross_entropy(hidden @ weight.T + bias, target, ...) without the N x V logits.

    hidden: float32 or float64, shape (..., D). weight: (V, D), hidden's dtype (torch.nn.Linear's
    layout); bias: None or (V,). class_weight is cross_entropy's `weight` (per-class weights);
    every other option is cross_entropy's. chunk_bytes: the budget of the one buffer of logits
    (rows x V), default DEFAULT_CHUNK_BYTES (256 MiB). Returns what cross_entropy returns.
    """
    problem = _Problem(hidden, weight, target, bias, class_weight, sample_weight, ignore_index,
                       reduction, label_smoothing, z_loss, softcap, logit_scale, n_threads,
                       chunk_bytes)
    loss, lse = _run(problem, return_lse)
    return (loss, lse) if return_lse else loss


def linear_cross_entropy_with_grad(hidden, weight, target, *, bias=None, class_weight=None,
                                   sample_weight=None, ignore_index=-100, reduction="mean",
                                   label_smoothing=0.0, z_loss=0.0, softcap=None,
                                   logit_scale=1.0, return_lse=False, grad_output=None,
                                   chunk_bytes=None, n_threads=None):
    """linear_cross_entropy and its gradients with respect to hidden, weight and bias.

    Arguments as linear_cross_entropy; grad_output as in cross_entropy_with_grad. Returns
    (loss, grad_hidden, grad_weight, grad_bias), or (loss, lse, grad_hidden, grad_weight,
    grad_bias) with return_lse=True; grad_bias is None without a bias. The gradients have the
    operands' shapes and dtype; the weight's and bias's are accumulated over the chunks of rows
    in that dtype (float32 for float32, float64 for float64).
    """
    problem = _Problem(hidden, weight, target, bias, class_weight, sample_weight, ignore_index,
                       reduction, label_smoothing, z_loss, softcap, logit_scale, n_threads,
                       chunk_bytes)
    plan, dtype = problem.plan, problem.hidden.dtype
    scale, row_scale = check_grad_output(grad_output, plan.reduction, plan.lead_shape)
    grads = (np.zeros(problem.hidden.shape, dtype), np.zeros(problem.weight.shape, dtype),
             None if problem.bias is None else np.zeros(problem.n_classes, dtype))
    denominator = mean_denominator(plan) if plan.reduction == "mean" else None
    if denominator == 0:
        # Nothing counts: a NaN mean and, as torch (and cross_entropy_with_grad), all-zero
        # gradients, even for a counted row of weight 0 that holds NaN.
        loss, lse = _run(problem, return_lse)
    else:
        loss, lse = _run(problem, return_lse, grads, scale / (denominator or 1.0), row_scale)
    grad_hidden = grads[0].reshape(*problem.lead_shape, problem.hidden.shape[1])
    if return_lse:
        return (loss, lse, grad_hidden, *grads[1:])
    return (loss, grad_hidden, *grads[1:])
