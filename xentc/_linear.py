"""Fused linear + cross-entropy: a language model's loss without its N x V logits (issue 19).

The logits of an output layer, `hidden @ weight.T + bias`, are N x V: 4096 tokens x 128256
classes of float32 is 2 GB, and their gradient as much again.

The loss alone (linear_cross_entropy) is blocked over classes and rows, as Cut Cross-Entropy
does: blocks of CLASS_BLOCK classes outer, so each block of the weight is read once, and
within each, blocks of as many rows as `chunk_bytes` (FORWARD_CHUNK_BYTES by default) of
rows x CLASS_BLOCK logits hold:

    per class block k, per row block r:   Z = H_r W_k^T + b_k                 (BLAS)
                                          per-row statistics of Z (shard_stats' kernel)
    per class block k:                    running statistics <- merged with block k's
    at the end:                           combine_shards: loss, lse, reduction

so its memory is one block of logits and O(N) statistics. The class block is fixed, so the
statistics merge in one order whatever the budget and n_threads (_forward).

With the gradients (linear_cross_entropy_with_grad) the logits are made one chunk of rows at
a time, in one reused buffer of at most `chunk_bytes`:

    forward, per chunk c of rows:   Z_c = H_c W^T + b          (BLAS: NumPy's matmul)
                                    loss_c (and G_c = dL/dZ_c, written over Z_c) by xentc's
                                    fused kernel, with the whole problem's 'mean' denominator
    backward, same chunk, Z_c = G_c: dH_c  = G_c W             (BLAS)
                                    dW   += G_c^T H_c          (BLAS, a block of classes at a time)
                                    db   += column sums of G_c

so the extra memory is the chunk buffer plus the gradients returned. Options are those of
xentc.cross_entropy, applied to the logits of each chunk; each chunk's call is the core function
itself, so semantics cannot drift. The loss alone goes through the vocabulary-shard functions
(xentc._shards), which implement the same options on blocks of classes and are tested against
the core.

The weight gradient is a sum over chunks: its rounding depends on the chunk size (not on
n_threads), and stays within float32 tolerance of the float64 sum.

16-bit operands (float16, ml_dtypes' bfloat16) are computed in float32, as 16-bit logits are:
NumPy's matmul has no BLAS for them (its own loops are two orders of magnitude slower), so each
chunk of hidden and each block of WEIGHT_BLOCK classes of the weight is widened to float32 as it
is used, and every product runs in float32 BLAS. The logits, their loss and lse are float32; the
weight and bias gradients accumulate in float32 (Liger's users saw training diverge when they
accumulated in bfloat16) and are rounded to the operands' dtype once, at the end.
"""

from __future__ import annotations

import math

import numpy as np

from . import _api, _kernels
from ._shards import ShardStats, combine_shards, merge_adjacent
from ._typing import ArrayLike, Loss, LossLse, Reduction
from ._validate import (
    HALF_BF16,
    check_grad_output,
    half_kind,
    mean_denominator,
    mean_loss,
    plan_cross_entropy,
    plan_shard,
)

# The default budget of the chunk of logits, and the fewest rows it gives unless chunk_bytes is
# set. The BLAS wants rows: each chunk's products read the whole weight, G_c W has M = rows and
# G_c^T H_c has K = rows, and each chunk after the first adds its part of dW (V x D) in a pass
# of its own. On 2 busy AVX2 cores, loss + gradients at (N, D, V) = (4096, 1024, 32000), same
# run: 262-row chunks (32 MiB) 30-32 s, 1048 rows (128 MiB) 18.9 s, 2097 rows (256 MiB) 18.6 s,
# the three plain products 18.7 s. A smaller chunk_bytes trades that time for memory.
DEFAULT_CHUNK_BYTES = 128 * 2**20
DEFAULT_MIN_ROWS = 1024
# Classes per block of the weight: dW[block] += G_c[:, block]^T H_c needs a temporary of that many
# rows of D (NumPy's matmul has no beta = 1 of BLAS's gemm), and 16-bit weights are widened to
# float32 a block at a time. NumPy's OpenBLAS (2 threads, AVX2) ran the products of 2048-class
# blocks 1.2-1.6x slower than whole ones, 8192-class blocks at the whole ones' speed.
WEIGHT_BLOCK = 8192
# The forward-only call (linear_cross_entropy) is blocked over classes as well as rows: blocks of
# CLASS_BLOCK classes, the outer loop (each block of the weight read once), and blocks of rows
# within each, as many rows as FORWARD_CHUNK_BYTES (or chunk_bytes) of logits hold. The class
# block is fixed, never derived from the budget, the rows or n_threads: the per-row statistics
# of the blocks merge in one order, class block after class block, whatever those are.
CLASS_BLOCK = 512
FORWARD_CHUNK_BYTES = 4 * 2**20
# Logits per thread of the forward's per-block kernel (xentc.shard_stats'): one thread for a
# block of up to this many, so one at the default budget. The kernel's pass over a block is a
# few percent of its product's time, and the two alternate once per block (thousands of times
# a call): on 2 cores shared with other work, an OpenMP team per block, beside OpenBLAS's
# threads still spinning after their product, made the forward 1.7x slower (W1, 2 BLAS
# threads, blocks of 1024 x 1024, same run: 1.56x of the product's time with one kernel
# thread, 2.66x with two).
KERNEL_GRAIN = 4 * 2**20


def _widen(src, dst):
    """dst (float32) = src (float16 or bfloat16), exactly. A bfloat16 is the high half of the
    float32 of the same value (NaN payloads included), so its widening is a 16-bit shift of the
    bits: 1.8x faster than ml_dtypes' cast (3.5 against 6.2 ms for 8M elements here), and the
    weight is widened once per chunk and pass."""
    if half_kind(src.dtype) == HALF_BF16:
        np.left_shift(src.view(np.uint16), 16, out=dst.view(np.uint32), dtype=np.uint32)
    else:
        dst[...] = src


def _check_operands(hidden, weight, bias):
    """(hidden as (N, D), weight, bias) checked: floating, same dtype, shapes that fit."""
    if not isinstance(hidden, np.ndarray):
        hidden = np.asarray(hidden)
    if not isinstance(weight, np.ndarray):
        weight = np.asarray(weight)
    for name, array in (("hidden", hidden), ("weight", weight)):
        if not half_kind(array.dtype) and (
            array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8)
        ):
            raise TypeError(
                f"{name} must be a float32, float64, float16 or bfloat16 array; "
                f"got dtype {array.dtype}"
            )
    if hidden.ndim < 1:
        raise ValueError("hidden must have at least one axis (the features, last); got a 0-d array")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] < 1:
        raise ValueError(
            f"weight must have shape (V, D) with D = hidden.shape[-1] = "
            f"{hidden.shape[-1]} and V >= 1 (torch.nn.Linear's layout); got "
            f"{weight.shape}"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight must have hidden's dtype {hidden.dtype}; got {weight.dtype}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias must have hidden's dtype {hidden.dtype}; got {bias.dtype}")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape (V,) = ({weight.shape[0]},); got {bias.shape}")
    return hidden, weight, bias


def _forward_rows(chunk_bytes, n_classes, itemsize, n_rows):
    """Rows per block of the forward: as many as the budget holds of min(V, CLASS_BLOCK) logits
    (chunk_bytes is checked by _chunk_rows: at least one row of all V classes)."""
    budget = FORWARD_CHUNK_BYTES if chunk_bytes is None else int(chunk_bytes)
    return max(1, min(n_rows, budget // (min(CLASS_BLOCK, n_classes) * itemsize)))


def _chunk_rows(chunk_bytes, n_classes, itemsize, n_rows):
    if chunk_bytes is None:
        rows = max(DEFAULT_MIN_ROWS, DEFAULT_CHUNK_BYTES // (n_classes * itemsize))
        return max(1, min(n_rows, rows))
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, (int, np.integer)):
        raise TypeError(f"chunk_bytes must be an int; got {chunk_bytes!r}")
    if chunk_bytes < n_classes * itemsize:
        raise ValueError(
            f"chunk_bytes must hold at least one row of logits ({n_classes} x "
            f"{itemsize} bytes = {n_classes * itemsize}); got {chunk_bytes}"
        )
    return max(1, min(n_rows, int(chunk_bytes) // (n_classes * itemsize)))


class _Problem:
    """The checked call: the flattened operands, the options, and a plan of the whole problem
    (validated against the logits' shape without the logits themselves)."""

    def __init__(
        self,
        hidden,
        weight,
        target,
        bias,
        class_weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        softcap,
        logit_scale,
        n_threads,
        chunk_bytes,
    ):
        hidden, weight, bias = _check_operands(hidden, weight, bias)
        self.lead_shape = hidden.shape[:-1]
        self.n_rows = math.prod(self.lead_shape)
        self.n_classes = weight.shape[0]
        # Every check of the core on a stand-in for the logits: a broadcast zero of their shape
        # and dtype, which holds no memory (and is never read).
        stand_in = np.broadcast_to(np.zeros((), hidden.dtype), (*self.lead_shape, self.n_classes))
        self.plan = plan_cross_entropy(
            stand_in,
            target,
            class_weight,
            sample_weight,
            ignore_index,
            reduction,
            label_smoothing,
            z_loss,
            n_threads,
            softcap,
            logit_scale,
        )
        # The dtype of every product and of the logits: float32 for 16-bit operands.
        self.dtype = np.dtype(np.float32) if half_kind(hidden.dtype) else hidden.dtype
        self.hidden = hidden.reshape(self.n_rows, hidden.shape[-1])
        self.weight = weight
        self.bias = None if bias is None else bias.astype(self.dtype, copy=False)
        t = np.asarray(target)
        self.target = t.reshape(self.n_rows, *t.shape[len(self.lead_shape) :])
        s = None if sample_weight is None else np.asarray(sample_weight).reshape(self.n_rows)
        self.options = dict(
            weight=class_weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            softcap=softcap,
            logit_scale=logit_scale,
            n_threads=n_threads,
        )
        self.sample_weight = s
        self.rows = _chunk_rows(chunk_bytes, self.n_classes, self.dtype.itemsize, self.n_rows)
        self.forward_rows = _forward_rows(
            chunk_bytes, self.n_classes, self.dtype.itemsize, self.n_rows
        )
        self.class_weight = class_weight
        self.block = min(WEIGHT_BLOCK, self.n_classes)
        self._widened_buffer = None

    @property
    def _widened(self):
        """Where the gradient path widens a 16-bit block of the weight: made on first use, so
        that the forward (blocks of its own) never holds it; None for float32 / float64,
        whose blocks are views."""
        if self.weight.dtype == self.dtype:
            return None
        if self._widened_buffer is None:
            self._widened_buffer = np.empty((self.block, self.weight.shape[1]), self.dtype)
        return self._widened_buffer

    def chunks(self):
        for start in range(0, self.n_rows, self.rows):
            yield slice(start, min(start + self.rows, self.n_rows))

    def hidden_rows(self, rows):
        return self.hidden[rows].astype(self.dtype, copy=False)

    def weight_blocks(self):
        """(classes, the weight's rows for them in the products' dtype), WEIGHT_BLOCK at a time."""
        for first in range(0, self.n_classes, self.block):
            classes = slice(first, min(first + self.block, self.n_classes))
            if self._widened is None:
                yield classes, self.weight[classes]
            else:
                widened = self._widened[: classes.stop - classes.start]
                _widen(self.weight[classes], widened)
                yield classes, widened

    def logits(self, rows, buffer):
        """Z = H[rows] W^T + b, into the front of `buffer`."""
        z = buffer[: rows.stop - rows.start]
        h = self.hidden_rows(rows)
        if self._widened is None:
            np.matmul(h, self.weight.T, out=z)  # one product: OpenBLAS runs it fastest whole
        else:
            for classes, w in self.weight_blocks():
                np.matmul(h, w.T, out=z[:, classes])
        if self.bias is not None:
            z += self.bias
        return z

    def backward(self, rows, g, grad_hidden, grad_weight, grad_bias):
        """From G = dL/dZ of a chunk of rows: dH = G W for those rows; dW += G^T H and
        db += the column sums of G (grad_weight and grad_bias in the products' dtype).

        The first chunk's products go straight into dW and db (out=, no temporary and no
        addition pass over V x D): with one chunk, the usual case below the budget, dW costs
        its product alone; the bits are those of 0 + G^T H."""
        h = self.hidden_rows(rows)
        whole = self._widened is None
        first = rows.start == 0
        if whole:
            np.matmul(g, self.weight, out=grad_hidden[rows])
        else:
            dh = np.empty(h.shape, self.dtype)
            part_h = np.empty_like(dh)
        part_w = None if first else np.empty((self.block, h.shape[1]), self.dtype)
        for classes, w in self.weight_blocks():
            g_block = g[:, classes]
            if not whole:
                if classes.start == 0:
                    np.matmul(g_block, w, out=dh)
                else:
                    dh += np.matmul(g_block, w, out=part_h)
            if first:
                np.matmul(g_block.T, h, out=grad_weight[classes])
            else:
                part = part_w[: classes.stop - classes.start]
                grad_weight[classes] += np.matmul(g_block.T, h, out=part)
        if not whole:
            grad_hidden[rows] = dh  # rounded to 16 bits once
        if grad_bias is not None:
            if first:
                np.sum(g, axis=0, out=grad_bias)
            else:
                grad_bias += g.sum(axis=0)

    def chunk_options(self, rows):
        s = None if self.sample_weight is None else self.sample_weight[rows]
        return dict(self.options, sample_weight=s)


def _run(problem, return_lse, grads=None, scale=1.0, row_scale=None):
    """The loop over chunks of rows: (loss as the reduction asks, lse or None). With `grads`
    (grad_hidden, grad_weight, grad_bias or None), the chunk's gradient is written over its
    logits and taken back through the projection into them."""
    plan, dtype = problem.plan, problem.dtype
    buffer = np.empty((problem.rows, problem.n_classes), dtype)
    loss_rows = np.empty(problem.n_rows, dtype) if plan.reduction == "none" else None
    lse = np.empty(problem.n_rows, dtype) if return_lse else None
    totals = []
    for rows in problem.chunks():
        z = problem.logits(rows, buffer)
        kw = dict(
            problem.chunk_options(rows),
            return_lse=True,
            reduction="none" if loss_rows is not None else "sum",
        )
        if grads is None:
            part, part_lse = _api.cross_entropy(z, problem.target[rows], **kw)
        else:
            part, part_lse, g = _api.cross_entropy_with_grad(
                z,
                problem.target[rows],
                out=z,
                grad_output=scale if row_scale is None else row_scale[rows],
                **kw,
            )
            problem.backward(rows, g, *grads)
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
        loss = mean_loss(math.fsum(totals), denominator)
    return loss, None if lse is None else lse.reshape(problem.lead_shape)


# ---- the forward-only call: blocks of classes and rows, per-row statistics merged ------------

_STATS = ("max", "sumexp", "pivot", "target_logit", "pivot_weight", "weight_sum", "gap")


def _new_stats(n):
    """Per-row statistics of a range of classes, as ShardStats holds them, for n rows."""
    stats = {name: np.zeros(n) for name in _STATS}
    stats["pivot"] = np.full(n, -1, np.int64)
    return stats


def _transform(problem, z):
    """z'' = softcap tanh(logit_scale z / softcap), or logit_scale z, in place: the core's
    transform (src_c/xc_row_ops.inc's transform_row), in the logits' dtype, with the tanh's
    argument one product by a constant rounded once, as there."""
    plan = problem.plan
    if plan.softcap > 0.0:
        z *= problem.dtype.type(plan.logit_scale / plan.softcap)
        np.tanh(z, out=z)
        z *= problem.dtype.type(plan.softcap)
    elif plan.logit_scale != 1.0:
        z *= problem.dtype.type(plan.logit_scale)


def _block_stats(problem, classes, w, buffer, hidden_buffer, blk, class_weight):
    """The statistics of one block of classes for every row into blk, a block of rows at a
    time: Z = H[rows] W[classes]^T + b[classes] (BLAS), then xentc.shard_stats' kernel."""
    plan = problem.plan
    n_block = classes.stop - classes.start
    index = plan.target_index is not None
    bias = None if problem.bias is None else problem.bias[classes]
    for start in range(0, problem.n_rows, problem.forward_rows):
        rows = slice(start, min(start + problem.forward_rows, problem.n_rows))
        n = rows.stop - rows.start
        if hidden_buffer is None:
            h = problem.hidden[rows]
        else:
            h = hidden_buffer[:n]
            _widen(problem.hidden[rows], h)
        z = buffer[: n * n_block].reshape(n, n_block)
        np.matmul(h, w.T, out=z)
        if bias is not None:
            z += bias
        if plan.softcap > 0.0 or plan.logit_scale != 1.0:
            _transform(problem, z)
        target = plan.target_index[rows] if index else problem.target[rows, classes]
        shard = plan_shard(
            z,
            target,
            classes.start,
            problem.n_classes,
            class_weight,
            plan.ignore_index,
            plan.label_smoothing,
            max(1, min(plan.n_threads, n * n_block // KERNEL_GRAIN)),
        )
        _kernels.shard_stats(
            shard,
            want_gap=index and plan.label_smoothing > 0.0,
            max_out=blk["max"][rows],
            sum_out=blk["sumexp"][rows],
            target_logit_out=blk["target_logit"][rows],
            pivot_weight_out=blk["pivot_weight"][rows],
            weight_sum_out=blk["weight_sum"][rows],
            gap_out=blk["gap"][rows],
            pivot_out=blk["pivot"][rows],
        )
    if index:
        # The block's class weights, the same for every row (shard_stats' own sum, in class
        # order); the kernel leaves this to its caller.
        weights = n_block if class_weight is None else math.fsum(class_weight[classes])
        blk["weight_sum"][:] = weights


def _shard(problem, stats, classes, counted):
    """One block's statistics as the ShardStats that shard_stats returns for it."""
    plan = problem.plan
    return ShardStats(
        **stats,
        counted=counted,
        class_offset=classes.start,
        n_block=classes.stop - classes.start,
        n_classes=problem.n_classes,
        lead_shape=(problem.n_rows,),
        dtype=problem.dtype,
        kind="prob" if plan.target_index is None else "index",
        label_smoothing=plan.label_smoothing,
        ignore_index=plan.ignore_index,
    )


def _forward(problem, return_lse):
    """linear_cross_entropy: (loss as the reduction asks, lse or None).

    Class blocks outer (each block of the weight is read, and for 16-bit weights widened, once),
    blocks of rows inner (hidden is re-read once per class block); each (rows, classes) block of
    logits is made in one reused buffer and reduced by xentc.shard_stats' kernel to per-row
    statistics, which merge into running ones class block after class block (merge_adjacent,
    the merge combine_shards folds vocabulary shards with). The running statistics, one
    "shard" of all V classes, then go through combine_shards: the loss, the lse, the
    reduction. Memory: the buffer, and O(N) statistics."""
    plan, dtype = problem.plan, problem.dtype
    n, n_classes = problem.n_rows, problem.n_classes
    block = min(CLASS_BLOCK, n_classes)
    index = plan.target_index is not None
    counted = plan.target_index != plan.ignore_index if index else np.ones(n, dtype=bool)
    class_weight = (
        None
        if problem.class_weight is None
        else np.ascontiguousarray(np.asarray(problem.class_weight), dtype=dtype)
    )
    buffer = np.empty(problem.forward_rows * block, dtype)
    widen = problem.weight.dtype != dtype
    weight_buffer = np.empty((block, problem.weight.shape[1]), dtype) if widen else None
    hidden_buffer = (
        np.empty((problem.forward_rows, problem.hidden.shape[1]), dtype) if widen else None
    )
    run = None
    for first in range(0, n_classes, block):
        classes = slice(first, min(first + block, n_classes))
        if weight_buffer is None:
            w = problem.weight[classes]
        else:
            w = weight_buffer[: classes.stop - classes.start]
            _widen(problem.weight[classes], w)
        blk = _new_stats(n)  # new arrays: the running statistics may hold the last block's
        _block_stats(problem, classes, w, buffer, hidden_buffer, blk, class_weight)
        stats = _shard(problem, blk, classes, counted)
        run = stats if run is None else merge_adjacent(run, stats)
    assert run is not None  # V >= 1: at least one block
    totals = combine_shards(
        run, sample_weight=problem.sample_weight, reduction=plan.reduction, z_loss=plan.z_loss
    )
    loss = totals.loss
    if plan.reduction == "none":
        loss = loss.reshape(problem.lead_shape)
    return loss, totals.lse.reshape(problem.lead_shape) if return_lse else None


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    return_lse: bool = False,
    chunk_bytes: int | None = None,
    n_threads: int | None = None,
) -> Loss | LossLse:
    """xentc.cross_entropy of ``hidden @ weight.T + bias`` without the N x V logits.

    The logits are made one block of rows and classes at a time in one reused buffer of at
    most `chunk_bytes`: blocks of ``CLASS_BLOCK`` (512) classes, the outer loop, so each block
    of the weight is read once, and blocks of rows within each. Each block is reduced to per-row
    statistics (the maximum, the sum of exponentials, the target's logit, the smoothing sums),
    merged class block after class block as `combine_shards` merges vocabulary shards: the
    options and their semantics are `cross_entropy`'s. The class block is fixed, so the
    statistics merge in the same order for every `chunk_bytes` and `n_threads`.

    Parameters
    ----------
    hidden : array_like, shape (..., D)
        float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``; 16-bit operands are
        computed in float32).
    weight : array_like, shape (V, D)
        The projection, in ``torch.nn.Linear``'s layout, of `hidden`'s dtype.
    target : array_like
        Class indices of shape ``hidden.shape[:-1]`` or probabilities of shape
        ``(*hidden.shape[:-1], V)``, as `cross_entropy` reads them.
    bias : array_like, shape (V,), optional
        Added to the logits; `hidden`'s dtype.
    class_weight : array_like, shape (V,), optional
        `cross_entropy`'s ``weight`` (per-class weights), renamed since `weight` is the
        projection here.
    sample_weight, ignore_index, reduction, label_smoothing, z_loss
        As in `cross_entropy`, applied to the logits.
    softcap, logit_scale, return_lse
        As in `cross_entropy`, applied to the logits.
    n_threads : int, optional
        As in `cross_entropy`, for the kernel that reduces each block of logits; it gets one
        thread per ``KERNEL_GRAIN`` (4 Mi) logits of a block, so one at the default budget
        (the products run on the BLAS's own threads). The result does not depend on it.
    chunk_bytes : int, optional
        The budget of the buffer of logits: ``rows x min(V, CLASS_BLOCK)``, float32 for 16-bit
        operands (which also widen one block of the weight and one of rows of `hidden` to
        float32). Default ``FORWARD_CHUNK_BYTES`` (4 MiB: 2048 rows of 512 float32 classes).
        At least one row of all V logits (`linear_cross_entropy_with_grad`'s minimum, so that
        one budget serves both). Besides it the call keeps about 250 bytes a row of statistics.

    Returns
    -------
    loss : float or ndarray
        As `cross_entropy` returns it (float32 rows for 16-bit operands).
    lse : ndarray
        Only with ``return_lse=True``: each row's log-sum-exp.

    Raises
    ------
    TypeError
        A dtype it does not take, `weight` or `bias` of another dtype than `hidden`, a
        `chunk_bytes` that is not an int; and `cross_entropy`'s.
    ValueError
        `weight` not (V, D), `bias` not (V,), `chunk_bytes` below one row; and
        `cross_entropy`'s.

    See Also
    --------
    linear_cross_entropy_with_grad : with the gradients of `hidden`, `weight` and `bias`.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> rng = np.random.default_rng(0)
    >>> hidden = rng.standard_normal((6, 4))
    >>> weight = rng.standard_normal((10, 4))
    >>> target = np.array([1, 3, 5, 7, 9, 0])
    >>> loss = xentc.linear_cross_entropy(hidden, weight, target, chunk_bytes=2 * 10 * 8)
    >>> bool(np.isclose(loss, xentc.cross_entropy(hidden @ weight.T, target)))
    True
    """
    problem = _Problem(
        hidden,
        weight,
        target,
        bias,
        class_weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        softcap,
        logit_scale,
        n_threads,
        chunk_bytes,
    )
    loss, lse = _forward(problem, return_lse)
    return (loss, lse) if return_lse else loss


def linear_cross_entropy_with_grad(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    return_lse: bool = False,
    grad_output: ArrayLike | None = None,
    chunk_bytes: int | None = None,
    n_threads: int | None = None,
) -> tuple:
    """`linear_cross_entropy` and its gradients with respect to `hidden`, `weight`, `bias`.

    The logits are made one chunk of whole rows at a time in one reused buffer of at most
    `chunk_bytes`, and each chunk goes through `cross_entropy_with_grad` itself. Each chunk's
    gradient with respect to its logits is written over them and taken back through the
    projection before the next chunk: ``dH = G W``, ``dW += G^T H``, ``db += sum_rows G``.
    The loss is computed as the core computes it, so it may differ from
    `linear_cross_entropy`'s (blocks of classes) in the last bits.

    Parameters
    ----------
    hidden, weight, target, bias, class_weight, sample_weight
        As in `linear_cross_entropy`.
    ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale
        As in `linear_cross_entropy`.
    return_lse, n_threads
        As in `linear_cross_entropy`.
    chunk_bytes : int, optional
        The budget of the buffer of logits, whole rows here (``rows x V``, float32 for 16-bit
        operands); default ``DEFAULT_CHUNK_BYTES`` (128 MiB) or ``DEFAULT_MIN_ROWS`` (1024)
        rows, whichever is more. At least one row.
    grad_output : float or array_like, optional
        As in `cross_entropy_with_grad`: the cotangent of the loss (a scalar, or for
        ``'none'`` one per row).

    Returns
    -------
    loss : float or ndarray
        As `linear_cross_entropy` returns it.
    lse : ndarray
        Only with ``return_lse=True``.
    grad_hidden : ndarray
        `hidden`'s shape and dtype.
    grad_weight : ndarray
        `weight`'s shape and dtype; accumulated over the chunks in float32 for float32 and
        16-bit operands (rounded to 16 bits once), in float64 for float64.
    grad_bias : ndarray or None
        `bias`'s shape and dtype, accumulated as `grad_weight`; None without a bias.

    Raises
    ------
    TypeError, ValueError
        As `linear_cross_entropy`, and for a `grad_output` as `cross_entropy_with_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc
    >>> rng = np.random.default_rng(0)
    >>> hidden, weight = rng.standard_normal((6, 4)), rng.standard_normal((10, 4))
    >>> target = np.array([1, 3, 5, 7, 9, 0])
    >>> loss, d_hidden, d_weight, d_bias = xentc.linear_cross_entropy_with_grad(
    ...     hidden, weight, target)
    >>> _, d_logits = xentc.cross_entropy_with_grad(hidden @ weight.T, target)
    >>> bool(np.allclose(d_hidden, d_logits @ weight))
    True
    >>> bool(np.allclose(d_weight, d_logits.T @ hidden))
    True
    >>> d_bias is None
    True
    """
    problem = _Problem(
        hidden,
        weight,
        target,
        bias,
        class_weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        softcap,
        logit_scale,
        n_threads,
        chunk_bytes,
    )
    plan = problem.plan
    scale, row_scale = check_grad_output(grad_output, plan.reduction, plan.lead_shape)
    # dW and db accumulate in the products' dtype (float32 for 16-bit operands) and are rounded
    # to the operands' dtype once, at the end; dH is rounded chunk by chunk (each of its rows is
    # one chunk's).
    grads = (
        np.zeros(problem.hidden.shape, problem.hidden.dtype),
        np.zeros(problem.weight.shape, problem.dtype),
        None if problem.bias is None else np.zeros(problem.n_classes, problem.dtype),
    )
    denominator = mean_denominator(plan) if plan.reduction == "mean" else None
    if denominator == 0:
        # Nothing counts: a NaN mean and, as torch (and cross_entropy_with_grad), all-zero
        # gradients, even for a counted row of weight 0 that holds NaN.
        loss, lse = _run(problem, return_lse)
    else:
        loss, lse = _run(problem, return_lse, grads, scale / (denominator or 1.0), row_scale)
    grad_hidden = grads[0].reshape(*problem.lead_shape, problem.hidden.shape[1])
    grad_weight = grads[1].astype(problem.weight.dtype, copy=False)
    grad_bias = None if grads[2] is None else grads[2].astype(problem.hidden.dtype, copy=False)
    if return_lse:
        return loss, lse, grad_hidden, grad_weight, grad_bias
    return loss, grad_hidden, grad_weight, grad_bias
