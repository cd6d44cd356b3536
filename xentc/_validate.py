"""Every check and every error message of xentc, and the plans the kernels run from.

Each public function calls in here first. Cheap checks come first, the O(N) scans of targets and
sample weights last, and nothing is written to `out` before all have passed. What comes out is
what xentc/_kernels.pyx may trust blindly (see the contract in src_c/xc_api.h): native-endian,
aligned arrays of the right dtype and shape, every N x C operand described as a `Matrix`, every
index target valid. Messages read "<argument> must <expectation>; got <value>".
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple

import numpy as np

from . import _kernels
from ._threads import default_n_threads, effective_n_threads

REDUCTIONS = ("none", "mean", "sum")
_INT64 = np.iinfo(np.int64)


class Matrix(NamedTuple):
    """An array of shape (..., C) seen as n_rows x n_classes, without copying it.

    `array`'s data pointer is its element (0, ..., 0). Row i starts `row_offsets[i]` elements
    from it when the leading axes do not collapse into one step (a moved axis, say), else
    `i * row_step` elements. Steps and offsets count elements, not bytes.
    """

    array: np.ndarray
    row_offsets: np.ndarray | None
    row_step: int
    class_step: int


class XentPlan(NamedTuple):
    logits: Matrix
    n_rows: int
    n_classes: int
    lead_shape: tuple
    dtype: np.dtype  # the logits' (and the gradient's)
    row_dtype: np.dtype  # the kernel's: 'none' losses, lse, class weights
    target_index: np.ndarray | None  # (n_rows,) int64, when the targets are class indices
    ignore_index: int
    target_prob: Matrix | None  # when the targets are probabilities
    class_weight: np.ndarray | None  # (C,) contiguous, logits' dtype
    sample_weight: np.ndarray | None  # (n_rows,) float64
    reduction: str
    label_smoothing: float
    z_loss: float
    n_threads: int
    softcap: float  # 0.0: none
    logit_scale: float
    half: int  # 0, or HALF_F16 / HALF_BF16 for 16-bit logits


# ---- arrays ----------------------------------------------------------------------------------


def _kernel_ready(a):
    """`a` itself when the kernels can read it in place, else a native, aligned copy (the one
    case of a copy: byte-swapped or misaligned data, which no C loop can read directly)."""
    if a.dtype.isnative and a.flags.aligned and all(s % a.itemsize == 0 for s in a.strides):
        return a
    # np.array copies always; np.ascontiguousarray would hand back a misaligned array that is
    # already C-contiguous as it is (UBSan's misaligned loads in the kernels, found by fuzzing).
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C")


def as_matrix(a):
    """Describe `a` (shape (..., C), kernel-ready) as a Matrix."""
    itemsize = a.itemsize
    class_step = a.strides[-1] // itemsize if a.shape[-1] > 1 else 1
    lead = [(n, s // itemsize) for n, s in zip(a.shape[:-1], a.strides[:-1]) if n != 1]
    if any(n == 0 for n, _ in lead) or not lead:
        return Matrix(a, None, 0, class_step)
    # The leading axes collapse into one row step when each step is the next one's times its
    # length (C order over the leading axes, whatever the class axis does).
    if all(lead[k][1] == lead[k + 1][1] * lead[k + 1][0] for k in range(len(lead) - 1)):
        return Matrix(a, None, lead[-1][1], class_step)
    offsets = np.zeros([n for n, _ in lead], dtype=np.int64)
    for axis, (n, step) in enumerate(lead):
        shape = [1] * len(lead)
        shape[axis] = n
        offsets += (np.arange(n, dtype=np.int64) * step).reshape(shape)
    return Matrix(a, offsets.reshape(-1), 0, class_step)


def _rows_vector(a, dtype):
    """A per-row array of shape logits.shape[:-1] as a 1-D array of `dtype` (a view when it is
    one already; these are N-sized, so a copy is cheap)."""
    flat = np.asarray(a, dtype=dtype)
    if flat.ndim == 1 and flat.dtype.isnative and flat.flags.aligned:
        return flat
    return np.array(flat, dtype=dtype, order="C").reshape(-1)  # a copy: aligned (_kernel_ready)


def _aligned(a):
    """`a`, copied when misaligned (np.ascontiguousarray returns a contiguous array as it is)."""
    return a if a.flags.aligned else a.copy()


# 16-bit logits: the kernels' code for each (XC_HALF_* in src_c/xc_api.h, through _kernels.pxd).
# bfloat16 is ml_dtypes' NumPy dtype, known by its name and size so that xentc never imports
# ml_dtypes.
HALF_F16, HALF_BF16 = _kernels.HALF_F16, _kernels.HALF_BF16


def half_kind(dtype):
    """HALF_F16 for float16, HALF_BF16 for a bfloat16 dtype (ml_dtypes'), else 0."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize == 2:
        return HALF_F16
    if dtype.name == "bfloat16" and dtype.itemsize == 2:
        return HALF_BF16
    return 0


def kernel_dtype(dtype):
    """The dtype the kernels compute in for logits of `dtype`: float32 for 16-bit logits (their
    float32 kernel converts each row as it loads it), else the logits' own."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if half_kind(dtype) else dtype


def check_float_dtype(dtype, name):
    """TypeError naming `name` unless `dtype` is float32 or float64 (a metadata check: it runs
    on an ndarray's dtype here, on a dask array's when xentc.dask builds its graph)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise TypeError(f"{name} must be a float32 or float64 array; got dtype {dtype}")


def check_float_array(x, name):
    """x as an ndarray of float32 or float64 (TypeError naming `name` otherwise)."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    check_float_dtype(arr.dtype, name)
    return arr


def check_logits_meta(dtype, shape):
    """The logits' dtype and shape (classes last, C >= 1). 16-bit logits (float16, bfloat16)
    are accepted here, by the cross-entropy functions only."""
    if not half_kind(dtype):
        dtype = np.dtype(dtype)
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise TypeError(
                f"logits must be a float32, float64, float16 or bfloat16 array; got dtype {dtype}"
            )
    if len(shape) == 0:
        raise ValueError("logits must have at least one axis (the classes, last); got a 0-d array")
    if shape[-1] == 0:
        raise ValueError(f"logits must have at least one class (C >= 1); got shape {shape}")


def check_logits(logits):
    arr = logits if isinstance(logits, np.ndarray) else np.asarray(logits)
    check_logits_meta(arr.dtype, arr.shape)
    return arr


def _real_scalar(value, name):
    # numbers.Real holds NumPy's integer and floating scalars, not its complex ones (np.number
    # would let np.complex128(0.1 + 1j) through as 0.1, the imaginary part silently dropped).
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range (10**400): out of every range here
        raise ValueError(
            f"{name} must be a real number in the float range; got an int of "
            f"{value.bit_length()} bits"
        ) from None


def check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}")
    return reduction


def check_int(value, name, expectation="an int"):
    """`value` as a Python int (numpy integers too, bools not), else a TypeError naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be {expectation}; got {value!r}")


def check_n_threads(n_threads):
    """The team size for n_threads (None: the library default; see xentc/_threads.py)."""
    if n_threads is None:
        return effective_n_threads(default_n_threads()[0])
    count = check_int(n_threads, "n_threads", "an int >= 1 or None")
    if count < 1:
        raise ValueError(f"n_threads must be >= 1; got {count}")
    return effective_n_threads(count)


def check_ignore_index(ignore_index):
    value = check_int(ignore_index, "ignore_index")
    if not _INT64.min <= value <= _INT64.max:
        raise ValueError(f"ignore_index must fit in int64; got {value}")
    return value


class Options(NamedTuple):
    """The scalar options, checked and normalised (they need no array to be checked)."""

    reduction: str
    ignore_index: int
    label_smoothing: float
    z_loss: float
    n_threads: int
    softcap: float = 0.0  # 0.0: no cap
    logit_scale: float = 1.0


def check_logit_transform(softcap, logit_scale):
    """(softcap as a float, 0.0 for None; logit_scale as a float). The transform is
    z' = logit_scale * z, then softcap * tanh(z' / softcap) when softcap is set."""
    cap = 0.0
    if softcap is not None:
        cap = _real_scalar(softcap, "softcap")
        if not (math.isfinite(cap) and cap > 0.0):
            raise ValueError(f"softcap must be None or finite and > 0; got {softcap!r}")
    scale = _real_scalar(logit_scale, "logit_scale")
    if not math.isfinite(scale):
        raise ValueError(f"logit_scale must be finite; got {logit_scale!r}")
    return cap, scale


def check_label_smoothing(label_smoothing):
    label_smoothing = _real_scalar(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing!r}")
    return label_smoothing


def check_z_loss(z_loss):
    z_loss = _real_scalar(z_loss, "z_loss")
    if not (math.isfinite(z_loss) and z_loss >= 0.0):
        raise ValueError(f"z_loss must be finite and >= 0; got {z_loss!r}")
    return z_loss


def check_options(
    reduction, ignore_index, label_smoothing, z_loss, n_threads, softcap=None, logit_scale=1.0
):
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    label_smoothing = check_label_smoothing(label_smoothing)
    z_loss = check_z_loss(z_loss)
    cap, scale = check_logit_transform(softcap, logit_scale)
    return Options(
        reduction, ignore_index, label_smoothing, z_loss, check_n_threads(n_threads), cap, scale
    )


# Metadata checks take a dtype and a shape, so that xentc.dask runs the very same checks on dask
# arrays when it builds its graph; the value scans (scan_*) run on the data itself, in the core
# API before any kernel and in xentc.dask inside each block.


def check_weight_meta(dtype, shape, n_classes):
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"weight must be a floating array; got dtype {np.dtype(dtype)}")
    if tuple(shape) != (n_classes,):
        raise ValueError(
            f"weight must be 1-D with one entry per class ({n_classes}); got shape {tuple(shape)}"
        )


def check_sample_weight_meta(dtype, shape, lead_shape):
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"sample_weight must be a floating array; got dtype {np.dtype(dtype)}")
    if tuple(shape) != tuple(lead_shape):
        raise ValueError(
            f"sample_weight must have shape logits.shape[:-1] = {tuple(lead_shape)}; "
            f"got {tuple(shape)}"
        )


def scan_sample_weight(rows_weight):
    """The O(N) value check of sample weights (a float64 vector): every value >= 0."""
    bad = ~(rows_weight >= 0)  # NaN fails too
    if bad.any():
        raise ValueError(f"sample_weight must hold values >= 0; found {rows_weight[bad][0]!r}")


def check_target_meta(dtype, shape, logits_shape, logits_name="logits"):
    """'index' (class indices) or 'prob' (probabilities), from the target's dtype and shape.

    The dtype decides how a target is read (integers: class indices, of the logits' leading
    shape; floating: probabilities, of the logits' shape), so a target whose shape fits the other
    reading is told about its dtype, not its shape."""
    dtype, shape, logits_shape = np.dtype(dtype), tuple(shape), tuple(logits_shape)
    lead_shape = logits_shape[:-1]
    index_shape = f"{logits_name}.shape[:-1] = {lead_shape}"
    prob_shape = f"{logits_name}.shape = {logits_shape}"
    if dtype.kind in "iu":
        if shape == logits_shape:
            raise ValueError(
                f"target must be floating (float32 or float64) for class probabilities; got "
                f"integer dtype {dtype} of shape {prob_shape} (for one-hot rows pass "
                f"target.astype(np.float32); class indices have shape {lead_shape})"
            )
        if shape != lead_shape:
            raise ValueError(
                f"target must have shape {index_shape} for class indices (or {prob_shape} "
                f"for probabilities); got {shape}"
            )
        return "index"
    if dtype.kind == "f":
        if shape == lead_shape:
            raise ValueError(
                f"target must be an integer array for class indices; got floating dtype "
                f"{dtype} of shape {index_shape} (pass target.astype(np.int64); probabilities "
                f"have shape {logits_shape})"
            )
        if dtype.itemsize not in (4, 8):
            raise TypeError(f"target probabilities must be float32 or float64; got dtype {dtype}")
        if shape != logits_shape:
            raise ValueError(
                f"target must have shape {prob_shape} for probabilities (or {lead_shape} for "
                f"class indices); got {shape}"
            )
        return "prob"
    raise TypeError(
        f"target must be an integer (class indices) or floating (probabilities) array; "
        f"got dtype {dtype}"
    )


def scan_class_indices(t, n_classes, ignore_index):
    """The O(N) value check of index targets: each in [0, n_classes) or ignore_index."""
    # One O(N) pass here lets the kernels index rows without a bounds check. Its min and max
    # (reductions, no N-sized temporaries: the full test below cost (10**6, 10) calls more time
    # than the kernel) settle the usual case; a value outside [0, C), ignored or not, takes the
    # full test. Unsigned targets are compared as integers: a uint16 65436 is not
    # ignore_index=-100.
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
        if bad.any():
            raise ValueError(
                f"target must hold class indices in [0, {n_classes}) or ignore_index="
                f"{ignore_index}; found {int(t[bad].flat[0])}"
            )


def class_weight_vector(weight, dtype):
    """Checked class weights as the kernels read them: contiguous, in the logits' dtype."""
    return _aligned(np.ascontiguousarray(weight, dtype=dtype))


def sample_weight_vector(sample_weight):
    """Checked sample weights as the kernels read them: a float64 vector, values scanned."""
    rows_weight = _rows_vector(sample_weight, np.float64)
    scan_sample_weight(rows_weight)
    return rows_weight


def index_target_vector(target, n_classes, ignore_index):
    """Checked index targets as the kernels read them: an int64 vector, values scanned."""
    scan_class_indices(target, n_classes, ignore_index)
    return _rows_vector(target, np.int64)


def plan_cross_entropy(
    logits,
    target,
    weight,
    sample_weight,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    n_threads,
    softcap=None,
    logit_scale=1.0,
):
    # Every metadata check first, then the O(N) value scans: the order xentc.dask follows too
    # (metadata when it builds the graph, values inside each block).
    arr = check_logits(logits)
    lead_shape = arr.shape[:-1]
    n_classes = arr.shape[-1]
    options = check_options(
        reduction, ignore_index, label_smoothing, z_loss, n_threads, softcap, logit_scale
    )
    w = None if weight is None else np.asarray(weight)
    if w is not None:
        check_weight_meta(w.dtype, w.shape, n_classes)
    s = None if sample_weight is None else np.asarray(sample_weight)
    if s is not None:
        check_sample_weight_meta(s.dtype, s.shape, lead_shape)
    t = target if isinstance(target, np.ndarray) else np.asarray(target)
    kind = check_target_meta(t.dtype, t.shape, arr.shape)

    kernel_arr = _kernel_ready(arr)
    row_dtype = kernel_dtype(kernel_arr.dtype)
    class_weight = None if w is None else class_weight_vector(w, row_dtype)
    rows_weight = None if s is None else sample_weight_vector(s)
    target_index = target_prob = None
    if kind == "index":
        target_index = index_target_vector(t, n_classes, options.ignore_index)
    else:
        target_prob = as_matrix(_kernel_ready(t))
    return XentPlan(
        logits=as_matrix(kernel_arr),
        n_rows=math.prod(lead_shape),
        n_classes=n_classes,
        lead_shape=lead_shape,
        dtype=kernel_arr.dtype,
        row_dtype=row_dtype,
        target_index=target_index,
        ignore_index=options.ignore_index,
        target_prob=target_prob,
        class_weight=class_weight,
        sample_weight=rows_weight,
        reduction=options.reduction,
        label_smoothing=options.label_smoothing,
        z_loss=options.z_loss,
        n_threads=options.n_threads,
        softcap=options.softcap,
        logit_scale=options.logit_scale,
        half=half_kind(kernel_arr.dtype),
    )


def mean_denominator(plan):
    """torch's 'mean' denominator of a plan (see rows_denominator)."""
    return rows_denominator(
        plan.target_index, plan.ignore_index, plan.class_weight, plan.sample_weight, plan.n_rows
    )


def rows_denominator(target_index, ignore_index, class_weight, sample_weight, n_rows):
    """torch's 'mean' denominator, with each counted row's share times its sample weight:
    sum of s_i * w[y_i] over non-ignored rows (index targets), sum of s_i (probabilities).
    Arguments as the kernels get them (index_target_vector, class_weight_vector,
    sample_weight_vector); target_index None means probability targets. xentc.dask adds this
    up over blocks of rows."""
    s = sample_weight
    if target_index is None:
        return float(n_rows if s is None else s.sum())
    counted = target_index != ignore_index
    if class_weight is None:
        return float(counted.sum() if s is None else s[counted].sum())
    w = class_weight.astype(np.float64)[target_index[counted]]
    return float(w.sum() if s is None else (s[counted] * w).sum())


# The one rule for a zero 'mean' denominator (every row ignored, or weighted 0), as torch: the
# mean loss is NaN and the gradient all zeros. Every layer (the core, the shards, dask, the
# linear head) reduces through these two.
def mean_loss(total, denominator):
    """total / denominator, NaN when the denominator is 0."""
    return total / denominator if denominator != 0 else math.nan


def mean_grad_scale(scale, denominator):
    """The gradient's scale under 'mean': scale / denominator, 0.0 when the denominator is 0."""
    return scale / denominator if denominator != 0 else 0.0


def check_grad_output_meta(dtype, shape, reduction, lead_shape):
    """'scalar' or 'rows' (one per row, reduction 'none' only), from grad_output's metadata."""
    dtype, shape = np.dtype(dtype), tuple(shape)
    if dtype.kind not in "fiu":
        raise TypeError(f"grad_output must be a real scalar or floating array; got dtype {dtype}")
    if not shape:
        return "scalar"
    if reduction != "none":
        raise ValueError(
            f"grad_output must be a scalar for reduction={reduction!r}; got an array of shape "
            f"{shape}"
        )
    if shape != tuple(lead_shape):
        raise ValueError(
            f"grad_output must be a scalar or have shape logits.shape[:-1] = {tuple(lead_shape)}; "
            f"got {shape}"
        )
    return "rows"


def check_grad_output(grad_output, reduction, lead_shape):
    """(scalar scale, per-row float64 scales or None)."""
    if grad_output is None:
        return 1.0, None
    g = np.asarray(grad_output)
    if check_grad_output_meta(g.dtype, g.shape, reduction, lead_shape) == "scalar":
        return float(g), None
    return 1.0, _rows_vector(g, np.float64)


def check_lse_dtype(lse_dtype):
    """None (the kernel's row dtype) or float64, the dtypes cross_entropy's lse may have."""
    if lse_dtype is None:
        return None
    try:
        dtype = np.dtype(lse_dtype)
    except TypeError:
        dtype = None
    if dtype != np.float64:
        raise ValueError(f"lse_dtype must be None or numpy.float64; got {lse_dtype!r}")
    return dtype


def check_lse_in(lse, lead_shape):
    """The float64 log-sum-exps a forward call kept, for cross_entropy_grad: shape
    logits.shape[:-1] (or flattened), as a contiguous float64 vector."""
    arr = np.asarray(lse)
    if arr.dtype != np.float64:
        raise TypeError(
            f"lse must be a float64 array (the forward's, kept in float64); got dtype {arr.dtype}"
        )
    if arr.shape not in (tuple(lead_shape), (math.prod(lead_shape),)):
        raise ValueError(
            f"lse must have shape logits.shape[:-1] = {tuple(lead_shape)}; got {arr.shape}"
        )
    return _aligned(np.ascontiguousarray(arr.reshape(-1), dtype=np.float64))


def _overlaps(a, b):
    if b is None or not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 20))
    except np.exceptions.TooHardError:
        return True  # cannot prove them apart: refuse rather than risk corrupting an input


def _same_elements(a, b):
    # The stride of an axis of length 1 never moves to another element: a view that differs
    # only there (np.flip of a (1, C) array along its rows) is the same elements in the same
    # layout, and as_matrix describes both alike.
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.dtype == b.dtype
        and all(sa == sb for sa, sb, n in zip(a.strides, b.strides, a.shape) if n > 1)
    )


def check_out(out, logits, dtype, others):
    """`out` (or a fresh array) for the gradient. `others`: the inputs `out` must not touch."""
    # logits as the caller passed them: an ndarray, or anything np.asarray took (a nested list)
    shape = logits.shape if isinstance(logits, np.ndarray) else np.shape(logits)
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray; got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out must have the logits' shape {shape}; got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"out must have dtype {dtype} (native byte order); got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable; got a read-only array")
    if not out.flags.aligned or any(s % out.itemsize for s in out.strides):
        raise ValueError("out must be aligned to its dtype; got a misaligned array")
    # An empty array holds no element to repeat, whatever its strides (NumPy 2.4 gives
    # np.empty((0, 3)) the strides (0, 0)).
    if out.size and any(s == 0 and n > 1 for s, n in zip(out.strides, out.shape)):
        raise ValueError(f"out must not repeat elements; got strides {out.strides}")
    in_place = isinstance(logits, np.ndarray) and _same_elements(out, logits)
    if isinstance(logits, np.ndarray) and not in_place and _overlaps(out, logits):
        raise ValueError(
            "out must be the logits themselves (same elements, same layout) or not overlap them; "
            f"got an overlapping view (strides {out.strides} vs {logits.strides})"
        )
    for name, other in others.items():
        if isinstance(other, np.ndarray) and _overlaps(out, other):
            raise ValueError(f"out must not overlap {name}; got an array sharing memory with it")
    return out


# ---- logsumexp / softmax / log_softmax -------------------------------------------------------


def plan_rows(x, axis):
    """(x as an ndarray, x with `axis` moved last and kernel-ready, the normalised axis).
    16-bit x (float16, bfloat16) is upcast to float32 here, exactly: these functions then compute
    and return float32 (see xentc.logsumexp)."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if half_kind(arr.dtype):
        arr = arr.astype(np.float32)
    check_float_dtype(arr.dtype, "x")
    axis = check_int(axis, "axis")
    if not -arr.ndim <= axis < arr.ndim:
        raise np.exceptions.AxisError(axis, arr.ndim)
    axis %= arr.ndim
    return arr, np.moveaxis(_kernel_ready(arr), axis, -1), axis


# ---- vocabulary shards (xentc/_shards.py) ----------------------------------------------------
# A shard is one block of classes, [class_offset, class_offset + B) of n_classes, of every row.


class ShardPlan(NamedTuple):
    logits: Matrix  # the block: n_rows x B
    n_rows: int
    n_block: int  # B
    lead_shape: tuple
    dtype: np.dtype
    class_offset: int
    n_classes: int  # all classes, over every shard
    target_index: np.ndarray | None  # (n_rows,) int64 GLOBAL class indices
    ignore_index: int
    target_prob: Matrix | None  # the block's probabilities
    class_weight: np.ndarray | None  # (B,) contiguous, logits' dtype: the block's weights
    label_smoothing: float
    n_threads: int
    # What a whole-array plan also carries, fixed for a block (the kernels read the same struct:
    # xentc/_kernels.pyx, plan_args).
    sample_weight: None = None
    z_loss: float = 0.0
    softcap: float = 0.0
    logit_scale: float = 1.0
    half: int = 0


def _check_shard_target(target, arr, lead_shape, n_classes, ignore_index):
    """(int64 index targets or None, probability Matrix or None), as for the whole array,
    except that index targets are GLOBAL: in [0, n_classes), not [0, B)."""
    t = target if isinstance(target, np.ndarray) else np.asarray(target)
    if check_target_meta(t.dtype, t.shape, arr.shape, "logits_block") == "index":
        scan_class_indices(t, n_classes, ignore_index)
        return _rows_vector(t, np.int64), None
    return None, as_matrix(_kernel_ready(t))


def _shard_sample_weight(sample_weight, lead_shape):
    """sample_weight as a float64 vector of the rows, every value >= 0."""
    if sample_weight is None:
        return None
    s = np.asarray(sample_weight)
    check_sample_weight_meta(s.dtype, s.shape, lead_shape)
    rows_weight = _rows_vector(s, np.float64)
    scan_sample_weight(rows_weight)
    return rows_weight


def _check_shard_weight(weight, arr, class_offset, n_classes):
    """The block's class weights (B,), contiguous in the logits' dtype: `weight` holds either
    all n_classes weights (the block's are sliced out) or the block's B."""
    if weight is None:
        return None
    w = np.asarray(weight)
    if w.dtype.kind != "f":
        raise TypeError(f"weight must be a floating array; got dtype {w.dtype}")
    n_block = arr.shape[-1]
    if w.shape == (n_classes,):
        w = w[class_offset : class_offset + n_block]
    elif w.shape != (n_block,):
        raise ValueError(
            f"weight must be 1-D with one entry per class ({n_classes}) or per class of the "
            f"block ({n_block}); got shape {w.shape}"
        )
    return _aligned(np.ascontiguousarray(w, dtype=arr.dtype))


def plan_shard(
    logits_block, target, class_offset, n_classes, weight, ignore_index, label_smoothing, n_threads
):
    arr = check_float_array(logits_block, "logits_block")
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError(
            f"logits_block must have at least one axis and one class (last); got shape {arr.shape}"
        )
    lead_shape = arr.shape[:-1]
    class_offset = check_int(class_offset, "class_offset")
    n_classes = check_int(n_classes, "n_classes")
    if class_offset < 0 or class_offset + arr.shape[-1] > n_classes:
        raise ValueError(
            f"class_offset must place the block's {arr.shape[-1]} classes inside [0, n_classes="
            f"{n_classes}); got class_offset={class_offset}"
        )
    ignore_index = check_ignore_index(ignore_index)
    label_smoothing = check_label_smoothing(label_smoothing)
    n_threads = check_n_threads(n_threads)
    kernel_arr = _kernel_ready(arr)
    class_weight = _check_shard_weight(weight, kernel_arr, class_offset, n_classes)
    target_index, target_prob = _check_shard_target(
        target, kernel_arr, lead_shape, n_classes, ignore_index
    )
    return ShardPlan(
        logits=as_matrix(kernel_arr),
        n_rows=math.prod(lead_shape),
        n_block=arr.shape[-1],
        lead_shape=lead_shape,
        dtype=kernel_arr.dtype,
        class_offset=class_offset,
        n_classes=n_classes,
        target_index=target_index,
        ignore_index=ignore_index,
        target_prob=target_prob,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        n_threads=n_threads,
    )


def plan_combine(stats, sample_weight, reduction, z_loss):
    """(the shards in class order, float64 sample weights or None, reduction, z_loss). The
    shards must come from one set of rows and options and cover every class exactly once."""
    one = isinstance(stats, tuple) and hasattr(stats, "class_offset")  # a lone ShardStats
    shards = [stats] if one else list(stats)
    if not shards:
        raise ValueError("stats must hold at least one shard's statistics; got none")
    for s in shards:
        if not (isinstance(s, tuple) and hasattr(s, "class_offset") and hasattr(s, "max")):
            raise TypeError(
                f"stats must hold ShardStats (from shard_stats); got {type(s).__name__}"
            )
    shards.sort(key=lambda s: s.class_offset)
    first = shards[0]
    for name in ("n_classes", "lead_shape", "dtype", "kind", "label_smoothing", "ignore_index"):
        values = {repr(getattr(s, name)) for s in shards}
        if len(values) > 1:
            raise ValueError(f"stats must all share {name}; got {sorted(values)}")
    start = 0
    for s in shards:
        if s.class_offset != start:
            raise ValueError(
                f"stats must cover classes [0, {first.n_classes}) once each, in blocks; "
                f"{'a gap' if s.class_offset > start else 'an overlap'} at class "
                f"{min(start, s.class_offset)}"
            )
        start += s.n_block
    if start != first.n_classes:
        raise ValueError(
            f"stats must cover classes [0, {first.n_classes}) once each; they end at {start}"
        )
    for s in shards[1:]:
        if not np.array_equal(s.counted, first.counted):
            raise ValueError("stats must come from the same targets; the ignored rows differ")
    reduction = check_reduction(reduction)
    z_loss = check_z_loss(z_loss)
    return shards, _shard_sample_weight(sample_weight, first.lead_shape), reduction, z_loss


def plan_shard_grad(
    logits_block, target, totals, class_offset, weight, grad_output, out, n_threads
):
    """(ShardPlan of the block, scalar scale, per-row scales or None, the gradient array)."""
    if not (isinstance(totals, tuple) and hasattr(totals, "p_coef")):
        raise TypeError(
            f"totals must be ShardTotals (from combine_shards); got {type(totals).__name__}"
        )
    plan = plan_shard(
        logits_block,
        target,
        class_offset,
        totals.n_classes,
        weight,
        totals.ignore_index,
        totals.label_smoothing,
        n_threads,
    )
    if plan.lead_shape != totals.lead_shape or plan.dtype != totals.dtype:
        raise ValueError(
            f"logits_block must have the rows and dtype of the combined shards "
            f"({totals.lead_shape}, {totals.dtype}); got {plan.lead_shape}, {plan.dtype}"
        )
    kind = "index" if plan.target_index is not None else "prob"
    if kind != totals.kind:
        raise ValueError(
            f"target must be of the kind the shards were combined with ({totals.kind}); got {kind}"
        )
    scale, row_scale = check_grad_output(grad_output, totals.reduction, totals.lead_shape)
    grad = check_out(
        out,
        logits_block,
        plan.dtype,
        {"target": target, "weight": weight, "grad_output": grad_output},
    )
    return plan, scale, row_scale, grad
