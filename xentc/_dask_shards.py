"""Cross-entropy of dask arrays whose class axis has more than one chunk (vocabulary shards).

xentc.dask hands logits chunked along the classes to cross_entropy_blocks. The graph is built
with da.blockwise, as xentc.dask's row-chunked graph is; per block of rows r and block of
classes c (no task ever holds more than one block of logits):

    stats[r, c]  = shard_stats(logits[r, c], target[r] or target[r, c])      per block
    totals[r]    = combine_shards(stats[r, 0], stats[r, 1], ...)               per block of rows:
                   the shards' statistics merged in class order, with the rows' sample weights
    loss         'none': totals[r].loss, one block of rows each; 'mean'/'sum': the blocks'
                   loss sums (and denominators) added over xentc.dask's fixed tree of exactly
                   rounded sums, then divided
    grad[r, c]   = shard_grad(logits'[r, c], totals[r], scale)                 per block

logits' is a copy of the logits' graph bound to come after every totals[r]
(dask.graph_manipulation.bind): its blocks are read (or computed) again for the gradient pass
instead of being held in memory from the first pass to the second, as a plain second use of the
same keys would make the scheduler do. Every task is deterministic and every sum has an order
fixed by the chunking, so the results are bitwise identical on every scheduler and worker count
for a given chunking; they equal the single-array call within the spec's tolerance.

dask is imported here only (xentc.dask imports this module when it needs it).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.graph_manipulation import bind

from ._shards import combine_shards, shard_grad, shard_stats
from ._validate import check_float_array, check_reduction, mean_grad_scale
from .dask import _CLASS, _LEAD_LETTERS, _as_dask, _mean, _tree_sum

__all__ = ["cross_entropy_blocks"]


# ---- what one task runs ----------------------------------------------------------------------


def _offset(classes):
    """The first class of a block of classes (any offset will do for a block of none)."""
    return int(classes[0]) if classes.size else 0


def _stats_task(
    logits, target, weight, classes, *, n_classes, ignore_index, label_smoothing, n_threads
):
    return shard_stats(
        logits,
        target,
        class_offset=_offset(classes),
        n_classes=n_classes,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        n_threads=n_threads,
    )


def _combine_task(stats, sample_weight, *, reduction, z_loss):
    # stats: the row block's statistics of every block of classes, in class order (the class
    # index is contracted and concatenate=False, so dask hands them over as a list)
    return combine_shards(stats, sample_weight=sample_weight, reduction=reduction, z_loss=z_loss)


def _pick(totals, name):
    return getattr(totals, name)


def _pick_part(totals, name, lead_ndim):
    """One block of rows' loss sum or denominator, as a (1, ..., 1) float64 block."""
    return np.full((1,) * lead_ndim, getattr(totals, name), dtype=np.float64)


def _mean_scale(denominator, grad_output):
    """grad_output / the global 'mean' denominator (0 when it is 0: an all-zero gradient, as the
    single-array call gives)."""
    scale = 1.0 if grad_output is None else float(np.asarray(grad_output))
    return np.float64(mean_grad_scale(scale, float(denominator)))


def _grad_task(logits, target, totals, weight, grad_output, classes, *, n_threads):
    return shard_grad(
        logits,
        target,
        totals,
        class_offset=_offset(classes),
        weight=weight,
        grad_output=grad_output,
        n_threads=n_threads,
    )


# ---- the graph ---------------------------------------------------------------------------------


def _objects(ndim):
    """meta of an array whose blocks are Python objects (never computed as an array)."""
    return np.empty((0,) * ndim, dtype=object)


def _dask(x, chunks):
    return None if x is None else _as_dask(x if isinstance(x, da.Array) else np.asarray(x), chunks)


def cross_entropy_blocks(
    logits,
    target,
    *,
    with_grad=False,
    return_lse=False,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    grad_output=None,
    n_threads=None,
):
    """xentc.cross_entropy(_with_grad) of a dask array `logits` chunked along the classes.

    logits: dask array of shape (..., C), any chunks (rows too). target: class indices of
    shape logits.shape[:-1] or probabilities of logits' shape, dask or NumPy (rechunked to the
    logits' blocks). weight: None or (C,), dask or NumPy, rechunked to the blocks of classes;
    sample_weight and, for 'none', grad_output: arrays of shape logits.shape[:-1]. The other
    options are the core API's. Returns as xentc.cross_entropy / cross_entropy_with_grad do,
    lazily: loss ('none': rows in the logits' dtype; 'mean'/'sum': a 0-d float64 array), then
    lse if return_lse, then grad (chunked like logits) if with_grad. Target values are checked
    in the tasks.
    """
    dtype = check_float_array(np.empty(0, dtype=logits.dtype), "logits").dtype
    reduction = check_reduction(reduction)
    ndim = logits.ndim
    lead = _LEAD_LETTERS[: ndim - 1]
    full = lead + _CLASS
    lead_chunks = logits.chunks[:-1]
    class_chunks = logits.chunks[-1]
    prob = np.dtype(target.dtype).kind == "f"
    target = _dask(target, logits.chunks if prob else lead_chunks)
    t_ind = full if prob else lead
    weight = _dask(weight, (class_chunks,))
    w_ind = None if weight is None else _CLASS
    sample_weight = _dask(sample_weight, lead_chunks)
    # each block of classes' class indices (made in the task, not carried by the graph): its
    # tasks need the first, the block's offset
    classes = da.arange(logits.shape[-1], chunks=(class_chunks,))
    rows_meta = np.empty((0,) * (ndim - 1), dtype=dtype)

    stats = da.blockwise(
        _stats_task,
        full,
        logits,
        full,
        target,
        t_ind,
        weight,
        w_ind,
        classes,
        _CLASS,
        meta=_objects(ndim),
        token="xentc-shard-stats",
        n_classes=logits.shape[-1],
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        n_threads=n_threads,
    )
    totals = da.blockwise(
        _combine_task,
        lead,
        stats,
        full,
        sample_weight,
        None if sample_weight is None else lead,
        concatenate=False,
        meta=_objects(ndim - 1),
        token="xentc-shard-totals",
        # 'mean' merges as 'sum': the blocks' sums and the global denominator are divided below
        reduction="none" if reduction == "none" else "sum",
        z_loss=z_loss,
    )

    def part(name):
        parts = da.blockwise(
            _pick_part,
            lead,
            totals,
            lead,
            name,
            None,
            ndim - 1,
            None,
            adjust_chunks=dict.fromkeys(lead, 1),
            meta=np.empty((0,) * (ndim - 1), np.float64),
            token=f"xentc-shard-{name}",
        )
        return _tree_sum(parts)

    denominator = part("denominator") if reduction == "mean" else None
    if reduction == "none":
        loss = da.blockwise(
            _pick, lead, totals, lead, "loss", None, meta=rows_meta, token="xentc-shard-loss"
        )
    else:
        loss = part("loss_sum")
        if reduction == "mean":
            loss = da.map_blocks(
                _mean, loss, denominator, dtype=np.float64, meta=np.float64(0.0), token="xentc-mean"
            )
    out = [loss]
    if return_lse:
        out.append(
            da.blockwise(
                _pick, lead, totals, lead, "lse", None, meta=rows_meta, token="xentc-shard-lse"
            )
        )
    if with_grad:
        # The second pass reads its own copy of the logits (and of probability targets, which
        # are as large), bound to start after every block of rows is combined. The seed is the
        # totals' name: a token of everything the totals (and so the bound copy) depend on.
        seed = totals.name
        logits2 = bind(logits, totals, seed=seed)
        target2 = bind(target, totals, seed=seed) if prob else target
        go, go_ind = grad_output, None  # None or a Python scalar: passed as it is
        if grad_output is not None and np.ndim(grad_output) > 0:
            go, go_ind = _dask(grad_output, lead_chunks), lead
        elif isinstance(grad_output, da.Array):
            go_ind = ""
        if reduction == "mean":
            # grad_output over the global denominator, computed once; the blocks' totals ran as
            # reduction 'sum', which scales by grad_output alone
            go = da.blockwise(
                _mean_scale,
                "",
                denominator,
                "",
                go,
                go_ind,
                meta=np.float64(0.0),
                token="xentc-shard-scale",
            )
            go_ind = ""
        out.append(
            da.blockwise(
                _grad_task,
                full,
                logits2,
                full,
                target2,
                t_ind,
                totals,
                lead,
                weight,
                w_ind,
                go,
                go_ind,
                classes,
                _CLASS,
                meta=np.empty((0,) * ndim, dtype=logits.dtype),
                token="xentc-shard-grad",
                n_threads=n_threads,
            )
        )
    return out[0] if len(out) == 1 else tuple(out)
