"""xentc over dask.array: the core API's cross-entropy for arrays chunked by rows::

    import xentc.dask
    loss = xentc.dask.cross_entropy(logits, target)                 # a lazy 0-d dask array
    loss, grad = xentc.dask.cross_entropy_with_grad(logits, target)   # grad chunked like logits

The options, their checks and their messages are the core API's (xentc.cross_entropy). Checks of
kind, dtype and shape run here, when the graph is built; checks of values (target indices in
range, sample weights >= 0) run inside each block, where the data is, as the core API runs them
before its kernels.

Each block of rows runs the core kernels on its own (one task per block). 'none' gives a lazy
array of row losses, the gradient a lazy array chunked like the logits. 'mean' and 'sum' give a
0-d dask array: each block's sum of row losses, and for 'mean' each block's share of the
denominator (a pass over the targets and sample weights alone, cheap), are added up over a tree
of blocks whose shape depends only on the chunking (dask's reduction with a fixed split_every,
each node an exactly rounded math.fsum). No sum depends on the order in which tasks finish, so a
result is bitwise identical on every scheduler and worker count for a given chunking, and it
equals the single-array call within the spec's tolerance. The gradient of a 'mean' needs the
global denominator before any block can be scaled: it is computed first, then handed to every
block of the fused loss + gradient pass.

Logits whose class axis has more than one chunk (vocabulary shards) go to
xentc._dask_shards.cross_entropy_blocks.

from_npy / to_npy read and write .npy files on disk block by block: each task maps the file
itself (np.load(mmap_mode="r")), so a graph carries only the path, never the data.
"""

from __future__ import annotations

import math
import os
from typing import Any

import dask.array as da
import numpy as np

import xentc

from . import _linear
from ._typing import Reduction
from ._validate import (
    check_grad_output_meta,
    check_logits_meta,
    check_options,
    check_sample_weight_meta,
    check_target_meta,
    check_weight_meta,
    class_weight_vector,
    index_target_vector,
    kernel_dtype,
    mean_grad_scale,
    mean_loss,
    rows_denominator,
    sample_weight_vector,
)

__all__ = [
    "NpyFile",
    "cross_entropy",
    "cross_entropy_with_grad",
    "from_npy",
    "linear_cross_entropy",
    "to_npy",
]

# blockwise index letters: one per leading axis, "z" for the classes.
_LEAD_LETTERS = "abcdefghijklmnopqrstuvwxy"
_CLASS = "z"
# Fan-in of the tree that adds the blocks' partial sums. Fixed, so that the tree (and with it
# every rounding) depends on the number of blocks only.
SPLIT_EVERY = 16


# ---- inputs ------------------------------------------------------------------------------------


def _meta(x, name):
    """(x as a dask array or an ndarray, its dtype, its shape), without computing anything."""
    if isinstance(x, da.Array):
        if any(math.isnan(n) for n in x.shape):
            raise ValueError(
                f"{name} must have known chunk sizes; got shape {x.shape} "
                "(call .compute_chunk_sizes() first)"
            )
        return x, x.dtype, x.shape
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    return arr, arr.dtype, arr.shape


def _as_dask(x, chunks):
    """x (dask or NumPy) as a dask array with exactly these chunks."""
    if isinstance(x, da.Array):
        return x.rechunk(chunks)
    return da.from_array(x, chunks=chunks)


class _Checked:
    """The arguments of one call, checked for kind, dtype and shape (never for values)."""

    def __init__(self, logits, target, weight, sample_weight, grad_output, options, with_grad):
        logits, dtype, shape = _meta(logits, "logits")
        check_logits_meta(dtype, shape)
        self.options = check_options(*options)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.n_classes = self.shape[-1]
        lead_shape = self.shape[:-1]
        if weight is not None:
            weight, w_dtype, w_shape = _meta(weight, "weight")
            check_weight_meta(w_dtype, w_shape, self.n_classes)
        if sample_weight is not None:
            sample_weight, s_dtype, s_shape = _meta(sample_weight, "sample_weight")
            check_sample_weight_meta(s_dtype, s_shape, lead_shape)
        target, t_dtype, t_shape = _meta(target, "target")
        self.kind = check_target_meta(t_dtype, t_shape, self.shape)
        self.grad_kind = None
        if with_grad and grad_output is not None:
            grad_output, g_dtype, g_shape = _meta(grad_output, "grad_output")
            self.grad_kind = check_grad_output_meta(
                g_dtype, g_shape, self.options.reduction, lead_shape
            )
        self.logits, self.target, self.weight = logits, target, weight
        self.sample_weight, self.grad_output = sample_weight, grad_output


# ---- what one block runs -----------------------------------------------------------------------


def _block_denominator(
    target, weight, sample_weight, *, kind, n_classes, ignore_index, logits_dtype, lead_ndim
):
    """This block's share of the 'mean' denominator, as a (1, ..., 1) array. The values of the
    targets and sample weights are checked here, as the core API checks them. (Probability
    targets come here only with sample weights, which alone make their denominator.)"""
    s = None if sample_weight is None else sample_weight_vector(sample_weight)
    t = w = None
    if kind == "index":
        t = index_target_vector(target, n_classes, ignore_index)
        w = None if weight is None else class_weight_vector(weight, logits_dtype)
    n_rows = (t if t is not None else s).size
    share = rows_denominator(t, ignore_index, w, s, n_rows)
    return np.full((1,) * lead_ndim, share)


def _block_xent(
    logits,
    target,
    weight,
    sample_weight,
    grad_output,
    denominator,
    *,
    options,
    return_lse,
    with_grad,
):
    """The core API on one block of rows. 'mean' runs as 'sum' here (the blocks' sums and the
    global denominator are combined outside); its gradient is scaled by grad_output over the
    global denominator, exactly as the single-array call scales it."""
    reduction = options["reduction"]
    kwargs = dict(
        options,
        reduction="sum" if reduction == "mean" else reduction,
        weight=weight,
        sample_weight=sample_weight,
        return_lse=return_lse,
    )
    if with_grad:
        if reduction == "mean":
            scale = 1.0 if grad_output is None else float(grad_output)
            grad_output = mean_grad_scale(scale, float(denominator))
        result = xentc.cross_entropy_with_grad(logits, target, grad_output=grad_output, **kwargs)
    else:
        result = xentc.cross_entropy(logits, target, **kwargs)
    if not isinstance(result, tuple):
        result = (result,)
    names = ("loss", "lse", "grad") if return_lse else ("loss", "grad")
    return dict(zip(names, result))


def _one_block(result):
    # Picking a row result contracts the class axis of the block layer: dask hands over the
    # blocks along it as a list (of one: the classes are one chunk here).
    if isinstance(result, list):
        (result,) = result
    return result


def _pick(result, key):
    return _one_block(result)[key]


def _pick_sum(result, lead_ndim):
    return np.full((1,) * lead_ndim, _one_block(result)["loss"], dtype=np.float64)


def _fsum(x, axis=None, keepdims=False):
    """chunk/combine/aggregate of the tree over blocks: an exactly rounded sum, so a node's
    value does not even depend on the order of its inputs."""
    total = math.fsum(np.asarray(x, dtype=np.float64).ravel().tolist())
    if keepdims:
        return np.full((1,) * np.ndim(x), total)
    return np.float64(total)


def _tree_sum(parts):
    """The sum of a float64 array of per-block partials (one element, and one chunk, per
    block), over a tree fixed by the chunking."""
    return da.reduction(
        parts,
        _fsum,
        _fsum,
        combine=_fsum,
        axis=None,
        keepdims=False,
        dtype=np.float64,
        split_every=SPLIT_EVERY,
        concatenate=True,
        meta=np.float64(0.0),
        name="xentc-tree-sum",
    )


def _mean(total, denominator):
    total, denominator = float(total), float(denominator)
    return np.float64(mean_loss(total, denominator))


# ---- the graph ---------------------------------------------------------------------------------


def _denominator(c, lead, lead_chunks, target, weight, sample_weight):
    """The 'mean' denominator as a 0-d dask array (or a float when it is known now: probability
    targets without sample weights)."""
    if c.kind == "prob" and sample_weight is None:
        return float(math.prod(c.shape[:-1]))
    one_per_block = {ind: 1 for ind in lead}
    parts = da.blockwise(
        _block_denominator,
        lead,
        target if c.kind == "index" else None,
        lead if c.kind == "index" else None,
        weight,
        None if weight is None else _CLASS,
        sample_weight,
        None if sample_weight is None else lead,
        adjust_chunks=one_per_block,
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0,) * len(lead), np.float64),
        token="xentc-denominator",
        kind=c.kind,
        n_classes=c.n_classes,
        ignore_index=c.options.ignore_index,
        logits_dtype=kernel_dtype(c.dtype),
        lead_ndim=len(lead),
    )
    return _tree_sum(parts)


def _run(
    logits,
    target,
    *,
    weight,
    sample_weight,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    return_lse,
    n_threads,
    with_grad,
    grad_output=None,
    softcap=None,
    logit_scale=1.0,
):
    c = _Checked(
        logits,
        target,
        weight,
        sample_weight,
        grad_output,
        (reduction, ignore_index, label_smoothing, z_loss, n_threads, softcap, logit_scale),
        with_grad,
    )
    options = {
        "ignore_index": ignore_index,
        "reduction": c.options.reduction,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "n_threads": n_threads,
        "softcap": softcap,
        "logit_scale": logit_scale,
    }

    if len(c.shape) == 1:
        # One row: run it as a (1, C) block and give back the shapes the core API gives.
        return _one_row(c, options, return_lse, with_grad)

    logits = c.logits
    if not isinstance(logits, da.Array):
        # NumPy logits: blocks of rows, never a split row.
        logits = da.from_array(logits, chunks=("auto",) * (len(c.shape) - 1) + (-1,))
    if len(logits.chunks[-1]) > 1:
        return _class_chunked(logits, c, options, return_lse, with_grad)

    ndim = len(c.shape)
    lead = _LEAD_LETTERS[: ndim - 1]
    full = lead + _CLASS
    lead_chunks = logits.chunks[:-1]
    target = _as_dask(c.target, lead_chunks if c.kind == "index" else logits.chunks)
    weight = None if c.weight is None else _as_dask(c.weight, (c.n_classes,))
    sample_weight = None if c.sample_weight is None else _as_dask(c.sample_weight, lead_chunks)

    grad_output, grad_ind = None, None
    if c.grad_kind == "rows":
        grad_output, grad_ind = _as_dask(c.grad_output, lead_chunks), lead
    elif c.grad_kind == "scalar":
        if isinstance(c.grad_output, da.Array):
            grad_output, grad_ind = c.grad_output, ""
        else:
            grad_output = float(np.asarray(c.grad_output))

    denominator, den_ind = None, None
    if c.options.reduction == "mean":
        denominator = _denominator(c, lead, lead_chunks, target, weight, sample_weight)
        den_ind = "" if isinstance(denominator, da.Array) else None

    # One task per block of rows, holding all of that block's results (a dict); the arrays below
    # pick from it. It has the logits' index (no axis contracted), so that dask's optimizer can
    # fuse the task that reads a block of logits (from_npy's, say) into it (it does when one
    # output is computed); either way each block is read and computed once.
    blocks = da.blockwise(
        _block_xent,
        full,
        logits,
        full,
        target,
        lead if c.kind == "index" else full,
        weight,
        None if weight is None else _CLASS,
        sample_weight,
        None if sample_weight is None else lead,
        grad_output,
        grad_ind,
        denominator,
        den_ind,
        meta=np.empty((0,) * ndim, dtype=object),
        token="xentc-blocks",
        options=options,
        return_lse=return_lse,
        with_grad=with_grad,
    )

    # row losses and lse in the kernel's dtype (float32 for 16-bit logits), as the core API's
    rows_meta = np.empty((0,) * (ndim - 1), dtype=kernel_dtype(c.dtype))
    if c.options.reduction == "none":
        loss = da.blockwise(
            _pick,
            lead,
            blocks,
            full,
            "loss",
            None,
            concatenate=False,
            meta=rows_meta,
            token="xentc-loss",
        )
    else:
        parts = da.blockwise(
            _pick_sum,
            lead,
            blocks,
            full,
            ndim - 1,
            None,
            concatenate=False,
            adjust_chunks=dict.fromkeys(lead, 1),
            dtype=np.float64,
            meta=np.empty((0,) * (ndim - 1), np.float64),
            token="xentc-block-sums",
        )
        loss = _tree_sum(parts)
        if c.options.reduction == "mean":
            loss = da.map_blocks(
                _mean, loss, denominator, dtype=np.float64, meta=np.float64(0.0), token="xentc-mean"
            )
    out = [loss]
    if return_lse:
        out.append(
            da.blockwise(
                _pick,
                lead,
                blocks,
                full,
                "lse",
                None,
                concatenate=False,
                meta=rows_meta,
                token="xentc-lse",
            )
        )
    if with_grad:
        out.append(
            da.map_blocks(
                _pick,
                blocks,
                "grad",
                dtype=c.dtype,
                meta=np.empty((0,) * ndim, dtype=c.dtype),
                token="xentc-grad",
            )
        )
    return out[0] if len(out) == 1 else tuple(out)


def _one_row(c, options, return_lse, with_grad):
    def as_rows(x):
        if x is None:
            return None
        return x[None] if isinstance(x, da.Array) else np.asarray(x)[None]

    logits, target = as_rows(c.logits), as_rows(c.target)
    sample_weight = as_rows(c.sample_weight)
    # grad_output of a single row is a scalar (the row's shape is ()); it stays one.
    kwargs = dict(options, weight=c.weight, sample_weight=sample_weight, return_lse=return_lse)
    if with_grad:
        kwargs["grad_output"] = c.grad_output
    result = _run(logits, target, with_grad=with_grad, **kwargs)
    result = list(result) if isinstance(result, tuple) else [result]
    if c.options.reduction == "none":
        result[0] = result[0].reshape(())
    if return_lse:
        result[1] = result[1].reshape(())
    if with_grad:
        result[-1] = result[-1].reshape(c.shape)
    return result[0] if len(result) == 1 else tuple(result)


def _class_chunked(logits, c, options, return_lse, with_grad):
    """Logits split along the classes: xentc._dask_shards merges the row statistics of the
    class blocks (vocabulary shards)."""
    # The shard kernels take neither the logit transform nor 16-bit logits (issue 6).
    unsupported = [
        name
        for name, used in (
            ("softcap", c.options.softcap != 0.0),
            ("logit_scale", c.options.logit_scale != 1.0),
            (f"logits of dtype {c.dtype}", kernel_dtype(c.dtype) != c.dtype),
        )
        if used
    ]
    if unsupported:
        raise NotImplementedError(
            f"{' and '.join(unsupported)} need logits in one chunk along the classes; got chunks "
            f"{logits.chunks[-1]} (rechunk the logits: logits.rechunk({{-1: -1}}))"
        )
    options = {k: v for k, v in options.items() if k not in ("softcap", "logit_scale")}
    from ._dask_shards import cross_entropy_blocks

    kwargs = dict(options, weight=c.weight, sample_weight=c.sample_weight)
    if with_grad:
        kwargs["grad_output"] = c.grad_output
    return cross_entropy_blocks(
        logits, c.target, with_grad=with_grad, return_lse=return_lse, **kwargs
    )


# ---- the public functions ----------------------------------------------------------------------


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    return_lse: bool = False,
    n_threads: int | None = None,
) -> Any:
    """`xentc.cross_entropy` for dask arrays (and NumPy arrays mixed in), lazily.

    Each block of rows runs the core kernels in its own task. Partial sums add over a tree fixed
    by the chunking, so a result is bitwise the same on every scheduler and worker count.

    Parameters
    ----------
    logits : dask.array.Array or array_like, shape (..., C)
        Chunked along the leading axes any way. Chunks along the classes run as vocabulary
        shards (without `softcap`, `logit_scale` or 16-bit logits).
    target, weight, sample_weight : dask.array.Array or array_like
        As for `xentc.cross_entropy`; rechunked to the logits' blocks of rows.
    ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale, return_lse
        As for `xentc.cross_entropy`.
    n_threads : int, optional
        Threads for each block's kernel; None follows ``OMP_NUM_THREADS`` (which
        ``dask.distributed`` sets to 1 in the workers it starts).

    Returns
    -------
    loss : dask.array.Array
        The row losses for ``'none'`` (chunked like the logits' rows); a 0-d float64 array for
        ``'mean'`` and ``'sum'``.
    lse : dask.array.Array
        Only with ``return_lse=True``: each row's log-sum-exp.

    Raises
    ------
    TypeError, ValueError
        As `xentc.cross_entropy`: kind, dtype and shape errors when the graph is built, value
        errors (target indices, sample weights) when the blocks run. Also a dask input with
        unknown chunk sizes (ValueError).
    NotImplementedError
        Logits chunked along the classes with `softcap`, `logit_scale` or 16-bit logits.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import xentc, xentc.dask
    >>> rng = np.random.default_rng(0)
    >>> z = rng.standard_normal((1000, 50))
    >>> y = rng.integers(0, 50, size=1000)
    >>> loss = xentc.dask.cross_entropy(da.from_array(z, chunks=(250, -1)), y)
    >>> bool(np.isclose(loss.compute(), xentc.cross_entropy(z, y)))
    True
    """
    return _run(
        logits,
        target,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        return_lse=return_lse,
        n_threads=n_threads,
        with_grad=False,
        softcap=softcap,
        logit_scale=logit_scale,
    )


def cross_entropy_with_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    return_lse: bool = False,
    n_threads: int | None = None,
    grad_output: Any = None,
) -> tuple:
    """`xentc.cross_entropy_with_grad` for dask arrays, lazily.

    Parameters
    ----------
    logits, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss
        As for `cross_entropy`.
    softcap, logit_scale, return_lse, n_threads
        As for `cross_entropy`.
    grad_output : float, array_like or dask.array.Array, optional
        A scalar (Python, NumPy or a 0-d dask array) or, for ``'none'``, an array of shape
        ``logits.shape[:-1]``, as in `xentc.cross_entropy_with_grad`.

    Returns
    -------
    loss : dask.array.Array
        As `cross_entropy` returns it.
    lse : dask.array.Array
        Only with ``return_lse=True``.
    grad : dask.array.Array
        The gradient, chunked like the logits. There is no ``out=``: store it with
        ``dask.array.store``, or into a ``.npy`` file with `to_npy`.

    Raises
    ------
    TypeError, ValueError, NotImplementedError
        As `cross_entropy`; also `grad_output` of the wrong kind or shape.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import xentc, xentc.dask
    >>> rng = np.random.default_rng(0)
    >>> z = rng.standard_normal((1000, 50))
    >>> y = rng.integers(0, 50, size=1000)
    >>> loss, grad = xentc.dask.cross_entropy_with_grad(da.from_array(z, chunks=(250, -1)), y)
    >>> grad.chunks
    ((250, 250, 250, 250), (50,))
    >>> np.allclose(grad.compute(), xentc.cross_entropy_with_grad(z, y)[1])
    True
    """
    return _run(
        logits,
        target,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        return_lse=return_lse,
        n_threads=n_threads,
        with_grad=True,
        grad_output=grad_output,
        softcap=softcap,
        logit_scale=logit_scale,
    )


# ---- .npy files on disk ------------------------------------------------------------------------


class NpyFile:
    """A ``.npy`` file on disk as an array-like for ``dask.array.from_array`` and
    ``dask.array.store``.

    Each read or write maps the file anew in the process that runs it (``np.load`` with
    ``mmap_mode``), so that a task holds only its own block and pickling this object ships only
    the path. Reads return views of the mapping (no copy); the core API reads memory-mapped
    logits in place. `from_npy` and `to_npy` use it.

    Parameters
    ----------
    path : str or os.PathLike
        An existing ``.npy`` file.
    mode : {'r', 'r+'}, default 'r'
        Read-only, or read and write (``__setitem__``).

    Attributes
    ----------
    path : str
    mode : str
    shape : tuple
    dtype : numpy.dtype
    ndim : int

    Raises
    ------
    ValueError
        An unknown `mode`; a write through a read-only ``NpyFile``.

    Examples
    --------
    >>> import numpy as np
    >>> from xentc.dask import NpyFile
    >>> np.save("x.npy", np.arange(6.0).reshape(2, 3))
    >>> f = NpyFile("x.npy")
    >>> f.shape, f.dtype, f[1]
    ((2, 3), dtype('float64'), memmap([3., 4., 5.]))
    """

    def __init__(self, path, mode="r"):
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+'; got {mode!r}")
        self.path = os.fspath(path)
        self.mode = mode
        header = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype = header.shape, header.dtype
        del header

    @property
    def ndim(self):
        return len(self.shape)

    def __getitem__(self, index):
        return np.load(self.path, mmap_mode="r")[index]

    def __setitem__(self, index, value):
        if self.mode != "r+":
            raise ValueError(f"NpyFile({self.path!r}) was opened read-only (mode 'r')")
        mapped = np.load(self.path, mmap_mode="r+")
        mapped[index] = value
        # No flush: the pages are the page cache's; other processes mapping the file see them,
        # and the kernel writes them back (call os.fsync on the file for durability).
        del mapped

    def __dask_tokenize__(self):
        stat = os.stat(self.path)
        return (type(self).__name__, self.path, self.mode, stat.st_size, stat.st_mtime_ns)

    def __repr__(self):
        return f"NpyFile({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def from_npy(path: str | os.PathLike, chunks: Any = None) -> da.Array:
    """A dask array over a ``.npy`` file, read lazily: each task maps the file and reads its
    own block, so a graph carries the path, never the data.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file.
    chunks : optional
        As ``dask.array.from_array`` takes them. None chunks the leading axes ``"auto"``
        (dask's default block size) and keeps each row's classes in one block.

    Returns
    -------
    dask.array.Array
        The file's shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> import xentc.dask
    >>> np.save("logits.npy", np.zeros((100, 10), dtype=np.float32))
    >>> x = xentc.dask.from_npy("logits.npy", chunks=(25, -1))
    >>> x.shape, x.chunks[0]
    ((100, 10), (25, 25, 25, 25))
    """
    source = NpyFile(path)
    if chunks is None:
        chunks = ("auto",) * (source.ndim - 1) + (-1,)
    # inline_array: each task holds the (tiny) NpyFile itself instead of depending on one shared
    # key that a distributed scheduler would have to copy between workers.
    return da.from_array(source, chunks=chunks, asarray=True, lock=False, inline_array=True)


def to_npy(x: Any, path: str | os.PathLike, *, compute: bool = True, **store_kwargs: Any) -> Any:
    """Write a dask array into a new ``.npy`` file through ``dask.array.store``.

    The file is created (or replaced) first; then each task maps it and writes its own block
    (blocks are disjoint regions, so no lock is needed).

    Parameters
    ----------
    x : dask.array.Array
        What to write.
    path : str or os.PathLike
        The ``.npy`` file to create.
    compute : bool, default True
        False returns the store's lazy result instead (see ``dask.array.store``).
    **store_kwargs
        Passed on to ``dask.array.store`` (``lock`` defaults to False).

    Returns
    -------
    None or dask.delayed.Delayed
        What ``dask.array.store`` returns.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import xentc.dask
    >>> xentc.dask.to_npy(da.ones((8, 4), chunks=(2, 4)), "ones.npy")
    >>> float(np.load("ones.npy").sum())
    32.0
    """
    fresh = np.lib.format.open_memmap(os.fspath(path), mode="w+", dtype=x.dtype, shape=x.shape)
    del fresh
    store_kwargs.setdefault("lock", False)
    # NpyFile is a target da.store writes into through __setitem__ (its documented protocol);
    # dask's annotation names arrays only.
    target: Any = NpyFile(path, mode="r+")
    return da.store(x, target, compute=compute, **store_kwargs)


# ---- fused linear + cross-entropy ---------------------------------------------------------------

_FEATURES = "Z"  # the blockwise index of hidden's last axis (D); _CLASS is V's


def _block_linear(hidden, weight, bias, target, class_weight, sample_weight, *, options):
    """xentc.linear_cross_entropy on one block of rows: its row losses ('none') or their sum."""
    loss = _linear.linear_cross_entropy(
        hidden,
        weight,
        target,
        bias=bias,
        class_weight=class_weight,
        sample_weight=sample_weight,
        **options,
    )
    if options["reduction"] == "none":
        return loss
    return np.full((1,) * (hidden.ndim - 1), loss, dtype=np.float64)


def linear_cross_entropy(
    hidden: Any,
    weight: Any,
    target: Any,
    *,
    bias: Any = None,
    class_weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    chunk_bytes: int | None = None,
    n_threads: int | None = None,
) -> Any:
    """`xentc.linear_cross_entropy` for hidden states chunked by rows.

    A corpus larger than memory (`from_npy`) scored without its N x V logits: each block of rows
    runs `xentc.linear_cross_entropy`; ``'mean'`` and ``'sum'`` add the blocks' sums over the
    same fixed tree as `cross_entropy`, so the result does not depend on the scheduler.

    Parameters
    ----------
    hidden : dask.array.Array or array_like, shape (..., D)
        Rows in any chunks (D is made one chunk).
    weight, bias, class_weight : array_like or dask.array.Array
        As in `xentc.linear_cross_entropy`; each is put in the graph as ONE block that every
        task reads, so a distributed scheduler sends it to each worker once.
    target, sample_weight : array_like or dask.array.Array
        As in `xentc.linear_cross_entropy`, rechunked to `hidden`'s rows.
    ignore_index, reduction, label_smoothing, z_loss, softcap, logit_scale, chunk_bytes, n_threads
        As in `xentc.linear_cross_entropy` (`chunk_bytes` and `n_threads` apply in each block).

    Returns
    -------
    loss : dask.array.Array
        Lazy: the row losses (``'none'``, chunked like `hidden`'s rows) or a 0-d float64.

    Raises
    ------
    TypeError, ValueError
        Dtypes and shapes as `xentc.linear_cross_entropy`, when the graph is built; values
        (target indices, sample weights) when a block runs.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import xentc, xentc.dask
    >>> rng = np.random.default_rng(0)
    >>> hidden = da.from_array(rng.standard_normal((40, 8)), chunks=(10, 8))
    >>> weight = rng.standard_normal((50, 8))
    >>> target = rng.integers(0, 50, 40)
    >>> loss = xentc.dask.linear_cross_entropy(hidden, weight, target)
    >>> want = xentc.linear_cross_entropy(hidden.compute(), weight, target)
    >>> bool(np.isclose(loss.compute(), want))
    True
    """
    hidden, h_dtype, h_shape = _meta(hidden, "hidden")
    weight, w_dtype, w_shape = _meta(weight, "weight")
    if len(w_shape) != 2 or len(h_shape) < 1 or w_shape[1] != h_shape[-1]:
        raise ValueError(
            f"weight must have shape (V, D) with D = hidden.shape[-1]; got "
            f"{w_shape} for hidden of shape {h_shape}"
        )
    if w_dtype != h_dtype:
        raise TypeError(f"weight must have hidden's dtype {h_dtype}; got {w_dtype}")
    logits_shape = (*h_shape[:-1], w_shape[0])
    check_logits_meta(h_dtype, logits_shape)
    options = check_options(
        reduction, ignore_index, label_smoothing, z_loss, n_threads, softcap, logit_scale
    )
    target, t_dtype, t_shape = _meta(target, "target")
    kind = check_target_meta(t_dtype, t_shape, logits_shape)
    if class_weight is not None:
        class_weight, cw_dtype, cw_shape = _meta(class_weight, "class_weight")
        check_weight_meta(cw_dtype, cw_shape, w_shape[0])
    if sample_weight is not None:
        sample_weight, s_dtype, s_shape = _meta(sample_weight, "sample_weight")
        check_sample_weight_meta(s_dtype, s_shape, h_shape[:-1])

    if not isinstance(hidden, da.Array):
        hidden = da.from_array(hidden, chunks=("auto",) * (len(h_shape) - 1) + (-1,))
    hidden = hidden.rechunk((*hidden.chunks[:-1], (h_shape[-1],)))
    lead = _LEAD_LETTERS[: len(h_shape) - 1]
    lead_chunks = hidden.chunks[:-1]
    whole = _as_dask(weight, w_shape)
    bias_d = None if bias is None else _as_dask(bias, np.shape(bias))
    target = _as_dask(target, lead_chunks if kind == "index" else (*lead_chunks, w_shape[0]))
    cw = None if class_weight is None else _as_dask(class_weight, (w_shape[0],))
    sw = None if sample_weight is None else _as_dask(sample_weight, lead_chunks)
    block_options = {
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "z_loss": z_loss,
        "softcap": softcap,
        "logit_scale": logit_scale,
        "chunk_bytes": chunk_bytes,
        "n_threads": n_threads,
        "reduction": "none" if options.reduction == "none" else "sum",
    }
    row_results = da.blockwise(
        _block_linear,
        lead,
        hidden,
        lead + _FEATURES,
        whole,
        _CLASS + _FEATURES,
        bias_d,
        None if bias_d is None else _CLASS,
        target,
        lead if kind == "index" else lead + _CLASS,
        cw,
        None if cw is None else _CLASS,
        sw,
        None if sw is None else lead,
        concatenate=True,
        token="xentc-linear",
        adjust_chunks=None if options.reduction == "none" else dict.fromkeys(lead, 1),
        meta=np.empty(
            (0,) * len(lead), np.float64 if options.reduction != "none" else kernel_dtype(h_dtype)
        ),
        options=block_options,
    )
    if options.reduction == "none":
        return row_results
    loss = _tree_sum(row_results)
    if options.reduction == "sum":
        return loss
    if kind == "prob" and sw is None:
        denominator = float(math.prod(h_shape[:-1]))
    else:
        parts = da.blockwise(
            _block_denominator,
            lead,
            target if kind == "index" else None,
            lead if kind == "index" else None,
            cw,
            None if cw is None else _CLASS,
            sw,
            None if sw is None else lead,
            adjust_chunks=dict.fromkeys(lead, 1),
            concatenate=True,
            dtype=np.float64,
            meta=np.empty((0,) * len(lead), np.float64),
            token="xentc-denominator",
            kind=kind,
            n_classes=w_shape[0],
            ignore_index=options.ignore_index,
            logits_dtype=kernel_dtype(h_dtype),
            lead_ndim=len(lead),
        )
        denominator = _tree_sum(parts)
    return da.map_blocks(
        _mean, loss, denominator, dtype=np.float64, meta=np.float64(0.0), token="xentc-mean"
    )
