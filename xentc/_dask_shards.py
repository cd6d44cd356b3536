"""Cross-entropy of dask arrays whose class axis has more than one chunk (vocabulary shards).

xentc.dask hands logits chunked along the classes to cross_entropy_blocks. The graph, per block
of rows r and block of classes c (no task ever holds more than one block of logits):

    stats[r, c]  = shard_stats(logits[r, c], target[r] or target[r, c])      per block
    totals[r]    = combine_shards(stats[r, 0], stats[r, 1], ...)               per block of rows:
                   the shards' statistics merged in class order, with the rows' sample weights
    loss         'none': totals[r].loss as one block of rows each; 'mean'/'sum': one task adds
                   every block's (loss sum, denominator) with math.fsum (exactly rounded, so the
                   order does not matter either) and divides
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

import functools
import itertools
import math

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.graph_manipulation import bind
from dask.highlevelgraph import HighLevelGraph

from ._shards import combine_shards, shard_grad, shard_stats
from ._validate import check_float_array, check_reduction, mean_grad_scale, mean_loss

__all__ = ["cross_entropy_blocks"]


# ---- what one task runs ----------------------------------------------------------------------


def _stats_task(
    logits, target, weight, *, class_offset, n_classes, ignore_index, label_smoothing, n_threads
):
    return shard_stats(
        logits,
        target,
        class_offset=class_offset,
        n_classes=n_classes,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        n_threads=n_threads,
    )


def _combine_task(stats, sample_weight, *, reduction, z_loss):
    return combine_shards(stats, sample_weight=sample_weight, reduction=reduction, z_loss=z_loss)


def _pick(totals, name):
    return getattr(totals, name)


def _partial_sums(totals):
    return totals.loss_sum, totals.denominator


def _reduce(parts, *, reduction):
    """The 'mean'/'sum' of every block of rows, as a 0-d float64 array."""
    total = math.fsum(p[0] for p in parts)
    if reduction == "sum":
        return np.asarray(total, dtype=np.float64)
    denominator = math.fsum(p[1] for p in parts)
    return np.asarray(mean_loss(total, denominator), dtype=np.float64)


def _mean_scale(grad_output, parts):
    """grad_output / the global 'mean' denominator (0 when it is 0: an all-zero gradient, as the
    single-array call gives)."""
    denominator = math.fsum(p[1] for p in parts)
    scale = 1.0 if grad_output is None else float(np.asarray(grad_output))
    return mean_grad_scale(scale, denominator)


def _grad_task(logits, target, totals, weight, grad_output, *, class_offset, n_threads):
    return shard_grad(
        logits,
        target,
        totals,
        class_offset=class_offset,
        weight=weight,
        grad_output=grad_output,
        n_threads=n_threads,
    )


# ---- the graph ---------------------------------------------------------------------------------


def _as_dask(x, chunks):
    if isinstance(x, da.Array):
        return x.rechunk(chunks)
    return da.from_array(np.asarray(x), chunks=chunks)


def _layer(name, dsk, deps, chunks, meta):
    """A dask array over the tasks `dsk` (keys (name, *block index))."""
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return da.Array(graph, name, chunks=chunks, meta=meta)


def _objects(ndim):
    """meta of a layer whose blocks are Python objects (never computed as an array)."""
    return np.empty((0,) * ndim, dtype=object)


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
    logits' blocks). weight: None or (C,), sliced per block of classes into the tasks (a dask
    weight is computed when the graph is built: C values); sample_weight and, for
    'none', grad_output: arrays of shape logits.shape[:-1]. The other options are the core
    API's. Returns as xentc.cross_entropy / cross_entropy_with_grad do, lazily: loss ('none':
    rows in the logits' dtype; 'mean'/'sum': a 0-d float64 array), then lse if return_lse, then
    grad (chunked like logits) if with_grad. Target values are checked in the tasks.
    """
    dtype = check_float_array(np.empty(0, dtype=logits.dtype), "logits").dtype
    reduction = check_reduction(reduction)
    ndim = logits.ndim
    n_classes = logits.shape[-1]
    lead_chunks = logits.chunks[:-1]
    class_chunks = logits.chunks[-1]
    offsets = np.cumsum((0, *class_chunks))[:-1].tolist()
    rows = list(itertools.product(*(range(len(c)) for c in lead_chunks)))
    classes = range(len(class_chunks))
    prob = np.dtype(target.dtype).kind == "f"
    target = _as_dask(target, logits.chunks if prob else lead_chunks)
    t_key = (lambda t, r, c: (t.name, *r, c)) if prob else (lambda t, r, c: (t.name, *r))
    if weight is not None:
        weight = np.asarray(weight)  # C values: sliced into each block's task
    w_block = [None if weight is None else weight[o : o + n] for o, n in zip(offsets, class_chunks)]
    token = tokenize(
        logits,
        target,
        weight,
        sample_weight,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        grad_output,
        n_threads,
        with_grad,
        return_lse,
    )

    name = "xentc-shard-stats-" + token
    dsk = {}
    for r in rows:
        for c in classes:
            task = functools.partial(
                _stats_task,
                class_offset=offsets[c],
                n_classes=n_classes,
                ignore_index=ignore_index,
                label_smoothing=label_smoothing,
                n_threads=n_threads,
            )
            dsk[(name, *r, c)] = (task, (logits.name, *r, c), t_key(target, r, c), w_block[c])
    stats = _layer(name, dsk, [logits, target], logits.chunks, _objects(ndim))

    deps = [stats]
    if sample_weight is not None:
        sample_weight = _as_dask(sample_weight, lead_chunks)
        deps.append(sample_weight)
    name = "xentc-shard-totals-" + token
    combine = functools.partial(
        _combine_task, reduction="none" if reduction == "none" else "sum", z_loss=z_loss
    )
    dsk = {
        (name, *r): (
            combine,
            [(stats.name, *r, c) for c in classes],
            None if sample_weight is None else (sample_weight.name, *r),
        )
        for r in rows
    }
    totals = _layer(name, dsk, deps, lead_chunks, _objects(ndim - 1))

    rows_meta = np.empty((0,) * (ndim - 1), dtype=dtype)
    out = []
    if reduction == "none":
        name = "xentc-shard-loss-" + token
        dsk = {(name, *r): (_pick, (totals.name, *r), "loss") for r in rows}
        out.append(_layer(name, dsk, [totals], lead_chunks, rows_meta))
    else:
        name = "xentc-shard-sums-" + token
        dsk = {(name, *r): (_partial_sums, (totals.name, *r)) for r in rows}
        parts = _layer(name, dsk, [totals], lead_chunks, _objects(ndim - 1))
        part_keys = [(parts.name, *r) for r in rows]
        name = "xentc-shard-reduce-" + token
        dsk = {(name,): (functools.partial(_reduce, reduction=reduction), part_keys)}
        out.append(_layer(name, dsk, [parts], (), np.empty((), dtype=np.float64)))
    if return_lse:
        name = "xentc-shard-lse-" + token
        dsk = {(name, *r): (_pick, (totals.name, *r), "lse") for r in rows}
        out.append(_layer(name, dsk, [totals], lead_chunks, rows_meta))
    if with_grad:
        out.append(
            _gradient(
                logits,
                target,
                prob,
                t_key,
                totals,
                parts if reduction != "none" else None,
                w_block,
                offsets,
                rows,
                classes,
                reduction,
                grad_output,
                n_threads,
                token,
                lead_chunks,
            )
        )
    return out[0] if len(out) == 1 else tuple(out)


def _gradient(
    logits,
    target,
    prob,
    t_key,
    totals,
    parts,
    w_block,
    offsets,
    rows,
    classes,
    reduction,
    grad_output,
    n_threads,
    token,
    lead_chunks,
):
    # The second pass reads its own copy of the logits (and of probability targets, which are
    # as large), bound to start after every block of rows is combined.
    logits2 = bind(logits, totals, seed=token)
    target2 = bind(target, totals, seed=token) if prob else target
    deps = [logits2, target2, totals]
    go = lambda r: grad_output  # noqa: E731  a scalar, or None
    if isinstance(grad_output, da.Array) and grad_output.ndim > 0:
        grad_output = _as_dask(grad_output, lead_chunks)
        deps.append(grad_output)
        go = lambda r: (grad_output.name, *r)  # noqa: E731
    elif isinstance(grad_output, da.Array):
        deps.append(grad_output)
        go = lambda r: (grad_output.name,)  # noqa: E731
    elif grad_output is not None and np.ndim(grad_output) > 0:
        grad_output = _as_dask(grad_output, lead_chunks)
        deps.append(grad_output)
        go = lambda r: (grad_output.name, *r)  # noqa: E731
    if reduction == "mean":
        # grad_output over the global denominator, computed once; the blocks' totals then run
        # as reduction 'sum', which scales by grad_output alone
        name = "xentc-shard-scale-" + token
        dsk = {(name,): (_mean_scale, go(()), [(parts.name, *r) for r in rows])}
        scale = _layer(name, dsk, [parts, *deps[3:]], (), _objects(0))
        deps.append(scale)
        go = lambda r: (scale.name,)  # noqa: E731
    name = "xentc-shard-grad-" + token
    dsk = {}
    for r in rows:
        for c in classes:
            task = functools.partial(_grad_task, class_offset=offsets[c], n_threads=n_threads)
            dsk[(name, *r, c)] = (
                task,
                (logits2.name, *r, c),
                t_key(target2, r, c),
                (totals.name, *r),
                w_block[c],
                go(r),
            )
    return _layer(name, dsk, deps, logits.chunks, np.empty((0,) * logits.ndim, dtype=logits.dtype))
