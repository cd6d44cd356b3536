"""Fuzzing of the Python-to-C boundary: random calls of every public function.

Each case draws a function, arrays of random shapes (0 and 1 included), dtypes (valid ones, and
integers, complex, object, bool, long double, byte-swapped; float16 logits are valid since issue 6,
their gradient checked to one float16 ulp more than float32's tolerance, float16 probabilities are
still hostile), layouts (negative, zero and large steps, permuted axes, views of views, misaligned
data at a byte offset inside a uint8 buffer) and every option with ordinary and hostile values (NaN,
inf, huge, negative, wrong types and shapes, `out` overlapping an input). An oracle written from the
spec (shared/spec/api.md) says whether the call is valid. Then:
  - a valid call returns what the float64 reference (tests/reference.py) returns, within the
    spec's tolerance (conftest.TOL), in the promised types, shapes and dtypes;
  - an invalid call raises TypeError or ValueError (nothing else), and writes nothing;
  - no call changes a byte of its inputs, or of `out` outside its own elements: every array
    lives inside a buffer with random guard bytes around it, and each buffer is compared with
    a copy taken before the call;
  - nothing crashes (the process would die; tools/sanitize_run.py runs this module under
    AddressSanitizer and UndefinedBehaviorSanitizer, where an out-of-bounds access also dies).

Budget: XENTC_FUZZ_SECONDS (default 3) or XENTC_FUZZ_CASES (a number of cases; wins when set).
Cases are reproducible: case k of seed s draws from np.random.default_rng([s, k]); the seed is
XENTC_FUZZ_SEED (default: 0). A failure names the seed and case: rerun that one alone with
XENTC_FUZZ_SEED=s XENTC_FUZZ_CASE=k. XENTC_FUZZ_TRACE=<file> writes each case's description to
that file before its call, so that after a crash (no Python traceback) the file names the case.
A longer run that prints its count of cases (`make fuzz FUZZ_SECONDS=600`):
    python tests/test_fuzz.py --seconds 600 [--seed 1]
(from outside the checkout, against the installed xentc; README, "Hardening").

What the oracle leaves open: values the spec leaves undefined are not drawn (NaN or infinite
class weights and probability targets, negative probabilities); only their neighbours are
(zero weights, probabilities not summing to 1, NaN / inf / huge logits, inf sample weights are
not drawn either: a row of loss 0 times inf is NaN, which neither the spec nor torch settles).
Open: probability targets with a class weight of 0 on a masked (-inf) class that has target
mass give the kernel's loss 0 for that class, the reference's (and torch's) 0 * inf = NaN; the
spec's exception covers a zero target, not a zero weight. Zero class weights are drawn with index
targets only, until that is settled (seed 1, case 5137 showed it).
"""

import math
import os
import sys
import time

import numpy as np
import pytest
from conftest import TOL
from reference import (
    check_grad,
    check_loss,
    ref_cross_entropy,
    ref_grad,
    ref_log_softmax,
    ref_logsumexp,
    ref_softmax,
    unit_grad_scale,
)

import xentc

GUARD = 64  # random bytes around each array in its buffer
MAX_BUFFER = 8 << 20  # layouts with large steps fall back to small ones beyond this

OK, ERROR, EITHER = "ok", "error", "either"


class Invalid(Exception):
    """Raised by the generator: this draw makes the call invalid (it expects an error)."""


# ---- arrays in guarded buffers ---------------------------------------------------------------


class Buffers:
    """Every uint8 buffer a case placed an array in, with a copy of its bytes before the call."""

    def __init__(self):
        self.items = []  # (buffer, snapshot)

    def new(self, rng, nbytes):
        buf = rng.integers(0, 256, nbytes, dtype=np.uint8)
        self.items.append(buf)
        return buf

    def snapshot(self):
        self.before = [b.copy() for b in self.items]

    def check(self, writable_views, msg):
        """No byte changed except inside `writable_views` (arrays living in these buffers)."""
        for buf, before in zip(self.items, self.before):
            after = buf.copy()
            for view in writable_views:
                restore_view(after, before, buf, view)
            changed = np.flatnonzero(after != before)
            assert changed.size == 0, (
                f"{changed.size} byte(s) changed outside `out` (first at byte {changed[0]} of "
                f"{buf.size}); {msg}"
            )


def restore_view(after, before, buf, view):
    """Copy `view`'s elements from `before` into `after` (all three the same length as buf)."""
    if view is None or view.size == 0 or not np.may_share_memory(view, buf):
        return
    offset = view.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
    target = np.ndarray(view.shape, view.dtype, buffer=after, offset=offset, strides=view.strides)
    source = np.ndarray(view.shape, view.dtype, buffer=before, offset=offset, strides=view.strides)
    target[...] = source


def place(rng, bufs, shape, dtype, *, fill, steps=None, order=None, flips=(), zeros=(), misalign=0):
    """A new array of `shape` and `dtype` inside a guarded buffer: axis k has memory rank
    order[k] (the last rank innermost), a step of steps[k] elements, is reversed when k in
    `flips`, repeated (stride 0) when k in `zeros`; the data starts `misalign` bytes off.
    Its elements are set from `fill` (an array broadcastable to shape)."""
    nd = len(shape)
    dtype = np.dtype(dtype)
    order = list(range(nd)) if order is None else order
    steps = [1] * nd if steps is None else steps
    strides = [0] * nd
    extent = dtype.itemsize
    for ax in sorted(range(nd), key=lambda k: -order[k]):  # innermost first
        if ax in zeros:
            continue
        strides[ax] = extent * steps[ax]
        extent = strides[ax] * max(shape[ax], 1)
    for ax in flips:
        strides[ax] = -strides[ax]
    size = math.prod(shape)
    lo = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides)) if size else 0
    hi = (sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + dtype.itemsize) if size else 0
    nbytes = 2 * GUARD + (hi - lo) + misalign
    buf = bufs.new(rng, nbytes)
    arr = np.ndarray(shape, dtype, buffer=buf, offset=GUARD + misalign - lo, strides=strides)
    if size:
        arr[...] = fill
    return arr


def random_layout(rng, shape, itemsize, *, allow_zero, allow_misalign):
    """Keyword arguments of place() for a random layout of `shape`."""
    nd = len(shape)
    kw = {}
    if nd and rng.random() < 0.35:
        kw["order"] = list(rng.permutation(nd))
    if nd and rng.random() < 0.35:
        steps = [int(rng.choice([1, 1, 2, 3, 7])) for _ in range(nd)]
        if rng.random() < 0.2:  # one huge step
            steps[int(rng.integers(nd))] = int(rng.choice([257, 4099]))
        if math.prod(max(n, 1) * s for n, s in zip(shape, steps)) * itemsize <= MAX_BUFFER:
            kw["steps"] = steps
    if nd and rng.random() < 0.3:
        kw["flips"] = tuple(k for k in range(nd) if rng.random() < 0.5)
    if allow_zero and nd and rng.random() < 0.12:
        kw["zeros"] = tuple(k for k in range(nd) if rng.random() < 0.5)
    if allow_misalign and itemsize > 1 and rng.random() < 0.08:
        kw["misalign"] = int(rng.integers(1, itemsize))
    return kw


def view_of_view(rng, arr):
    """A random view of `arr` (slices, reversals, swapped leading axes) with the same shape
    rank; or arr itself. Views of views come from applying it twice."""
    if arr.ndim == 0 or rng.random() < 0.6:
        return arr
    idx = []
    for n in arr.shape:
        r = rng.random()
        if n > 2 and r < 0.3:
            idx.append(slice(1, None))
        elif n > 3 and r < 0.5:
            idx.append(slice(None, None, 2))
        elif r < 0.7:
            idx.append(slice(None, None, -1))
        else:
            idx.append(slice(None))
    view = arr[tuple(idx)]
    if view.ndim >= 3 and rng.random() < 0.5:
        view = view.swapaxes(0, 1)
    return view


# ---- values ----------------------------------------------------------------------------------


def logit_values(rng, shape, dtype):
    """Random logits with, sometimes, NaN, +-inf and huge values in random places."""
    scale = float(rng.choice([0.1, 1.0, 5.0, 30.0]))
    z = np.asarray(rng.standard_normal(shape) * scale)  # an array also for shape ()
    if z.size and rng.random() < 0.3:
        huge = 1e30 if np.dtype(dtype) == np.float32 else 1e150
        specials = [np.nan, np.inf, -np.inf, -np.inf, huge, -huge]
        for _ in range(int(rng.integers(1, 4))):
            z.flat[int(rng.integers(z.size))] = specials[int(rng.integers(len(specials)))]
    return z


FLOATS = [np.float32, np.float64]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.intp]
BAD_LOGIT_DTYPES = [
    np.int32,
    np.int64,
    np.uint8,
    np.complex64,
    np.complex128,
    object,
    np.bool_,
    np.longdouble,
]


# ---- one case --------------------------------------------------------------------------------


class Case:
    def __init__(self, seed, index):
        self.seed, self.index = seed, index
        self.rng = np.random.default_rng([seed, index])
        self.bufs = Buffers()
        self.reasons = []  # why the call is invalid
        self.maybe = []  # why it may validly raise (the library may refuse conservatively)
        self.notes = []
        self.out_view = None
        self.half = None  # float16 logits: their dtype (results are then float32, grad float16)

    def bad(self, why):
        self.reasons.append(why)

    @property
    def expect(self):
        if self.reasons:
            return ERROR
        return EITHER if self.maybe else OK

    def __str__(self):
        return (
            f"fuzz case XENTC_FUZZ_SEED={self.seed} XENTC_FUZZ_CASE={self.index}: "
            f"{self.fn}({'; '.join(self.notes)}); expected {self.expect} "
            f"{self.reasons or self.maybe or ''}"
        )


def make_logits(case, for_rows):
    """The logits (or x): (array as passed, float64 values, native dtype or None if invalid)."""
    rng = case.rng
    nd = int(rng.choice([0, 1, 2, 2, 2, 3], p=[0.03, 0.25, 0.22, 0.2, 0.1, 0.2]))
    big = rng.random() < 0.02
    if big:  # long rows: the split path (few rows, C > one chunk) and the parallel blocks
        shape = [int(rng.integers(1, 3)), int(rng.choice([33000, 40000]))]
        nd = 2
    else:
        lead_sizes = [0, 1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33]
        classes = [
            1,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
            15,
            16,
            17,
            31,
            32,
            33,
            63,
            64,
            65,
            127,
            128,
            129,
            130,
            255,
            256,
            257,
            1000,
            3000,
        ]
        shape = [int(rng.choice(lead_sizes)) for _ in range(max(nd - 1, 0))]
        if nd:
            shape.append(0 if rng.random() < 0.03 else int(rng.choice(classes)))
        while math.prod(shape) > 12000:
            shape[int(np.argmax(shape[:-1]))] //= 2
    shape = tuple(shape)
    r = rng.random()
    if r < 0.06:
        dtype = np.dtype(BAD_LOGIT_DTYPES[int(rng.integers(len(BAD_LOGIT_DTYPES)))])
        case.bad(f"logits dtype {dtype}")
    elif r < 0.12:
        dtype = np.dtype(FLOATS[int(rng.integers(2))]).newbyteorder()  # byte-swapped: valid
    elif r < 0.18:
        dtype = np.dtype(np.float16)  # valid since issue 6: the float32 kernels run it
    else:
        dtype = np.dtype(FLOATS[int(rng.integers(2))])
    native = dtype.newbyteorder("=") if dtype.kind == "f" and dtype.itemsize in (4, 8) else None
    if dtype == np.float16:
        # `native` is the results' dtype (float32); the gradient is float16 (case.half)
        native, case.half = np.dtype(np.float32), dtype
    values = logit_values(rng, shape, native or np.float64)
    if case.half is not None:
        with np.errstate(over="ignore"):  # beyond float16's range: +-inf, valid logits
            values = values.astype(np.float16)
    if dtype.kind in "iub":
        values = np.nan_to_num(values, nan=0, posinf=1, neginf=-1).clip(-100, 100)
    if dtype.kind == "O":  # numpy keeps no objects in a raw buffer
        arr = values.astype(object)
    else:
        layout = random_layout(rng, shape, dtype.itemsize, allow_zero=True, allow_misalign=True)
        arr = place(rng, case.bufs, shape, dtype, fill=values.astype(dtype), **layout)
    arr = view_of_view(rng, view_of_view(rng, arr))
    case.notes.append(
        f"logits {arr.dtype}{arr.shape} strides {arr.strides}"
        f"{' misaligned' if not arr.flags.aligned else ''}"
    )
    if rng.random() < 0.1:
        arr.flags.writeable = False
        case.notes.append("read-only")
    as_passed = arr
    case.logits_is_list = False
    if rng.random() < 0.03 and 0 < arr.size < 200 and native is not None:
        as_passed = arr.tolist()  # a nested list: float64 (or a float for 0-d)
        native = np.dtype(np.float64) if native is not None else None
        case.half = None
        case.logits_is_list = True
        case.notes.append("as a list")
    if not for_rows and native is not None:
        if arr.ndim == 0:
            case.bad("0-d logits")
        elif arr.shape[-1] == 0:
            case.bad("C == 0")
    with np.errstate(invalid="ignore"):
        values64 = np.array(arr, dtype=np.float64) if native is not None else None
    return as_passed, arr, values64, native


def make_target(case, arr, native):
    rng = case.rng
    lead, c = arr.shape[:-1], arr.shape[-1]
    n = math.prod(lead)
    r = rng.random()
    if r < 0.05:  # hostile types
        kind = int(rng.integers(5))
        if kind == 0:
            t = None
        elif kind == 1:
            t = np.zeros(lead, dtype=np.complex64)
        elif kind == 2:
            t = np.zeros(lead, dtype=np.bool_)
        elif kind == 3:
            t = np.full(arr.shape, 0.1, dtype=np.float16)
        else:
            t = np.zeros(lead, dtype=object)
        case.bad(f"target of type {type(t).__name__} {getattr(t, 'dtype', '')}")
        case.notes.append(f"target {t if t is None else t.dtype}")
        return t, None
    if r < 0.65:  # class indices
        dtype = np.dtype(INTS[int(rng.integers(len(INTS)))])
        hi = min(c, np.iinfo(dtype).max + 1)
        values = rng.integers(0, max(hi, 1), size=lead) if c else np.zeros(lead, np.int64)
        ignore = -100
        choice = rng.random()
        if choice < 0.25:
            ignore = int(rng.integers(0, max(c, 1)))  # an index inside [0, C)
        elif choice < 0.3:
            ignore = int(rng.choice([-1, 2**62, -(2**63)]))
        ignore_arg = ignore
        if choice > 0.97:
            ignore_arg = [2**70, 1.5, True, "x", None][int(rng.integers(5))]
            case.bad(f"ignore_index={ignore_arg!r}")
        if n and dtype.kind == "i" and rng.random() < 0.3:
            mask = rng.random(lead) < 0.3
            if ignore >= np.iinfo(dtype).min and ignore <= np.iinfo(dtype).max:
                values = np.where(mask, ignore, values)
        if n and rng.random() < 0.06:  # a value outside [0, C) that is not ignore_index
            bad = int(rng.choice([c, c + 5, -1, -7]))
            info = np.iinfo(dtype)
            if info.min <= bad <= info.max and bad != ignore:
                values = np.array(values).astype(np.int64)
                values.flat[int(rng.integers(n))] = bad
                case.bad(f"target value {bad} outside [0, {c})")
        t = place(
            case.rng,
            case.bufs,
            lead,
            dtype,
            fill=np.asarray(values).astype(dtype),
            **random_layout(rng, lead, dtype.itemsize, allow_zero=False, allow_misalign=True),
        )
        if rng.random() < 0.06 and lead != (*lead, 1):
            t = np.zeros((*lead, 1), dtype=dtype)
            case.bad("index target of logits' shape + (1,)")
        elif rng.random() < 0.04:
            t = np.zeros(arr.shape, dtype=dtype)
            if arr.shape != lead:
                case.bad("index target of the logits' shape")
        case.notes.append(f"target {t.dtype}{t.shape} ignore_index={ignore_arg!r}")
        case.ignore_index = ignore_arg
        return t, "index"
    # probabilities
    dtype = np.dtype(FLOATS[int(rng.integers(2))])
    kind = rng.random()
    if kind < 0.4:
        probs = rng.dirichlet(np.ones(max(c, 1)), size=lead)[..., :c] if c else np.zeros(arr.shape)
    elif kind < 0.7 and c:
        # one-hot rows, set in place: np.eye(c) would be c * c doubles (12.8 GB at c = 40000)
        probs = np.zeros(arr.shape)
        np.put_along_axis(probs, rng.integers(0, c, size=(*lead, 1)), 1.0, axis=-1)
    else:
        probs = rng.uniform(0, 1.5, size=arr.shape)  # not summing to 1: still defined
    if rng.random() < 0.15:
        dtype = dtype.newbyteorder()
    t = place(
        rng,
        case.bufs,
        arr.shape,
        dtype,
        fill=probs.astype(dtype),
        **random_layout(rng, arr.shape, dtype.itemsize, allow_zero=True, allow_misalign=True),
    )
    if rng.random() < 0.05 and arr.ndim:
        t = np.zeros(lead, dtype=dtype)
        case.bad("probability target of shape logits.shape[:-1]")
    case.notes.append(f"target probs {t.dtype}{t.shape} strides {t.strides}")
    return t, "prob"


def make_options(case, arr, native, with_grad):
    rng = case.rng
    lead, c = arr.shape[:-1], (arr.shape[-1] if arr.ndim else 1)
    n = math.prod(lead)
    kw = {}
    if rng.random() < 0.35:
        r = rng.random()
        if r < 0.05:
            kw["weight"] = np.ones(c, dtype=np.int64)
            case.bad("integer weight")
        elif r < 0.1:
            kw["weight"] = np.ones(c + 1)
            case.bad("weight of length C + 1")
        else:
            w = rng.uniform(0.1, 3.0, c)
            # (a zero class weight with probability targets is left out: see the docstring)
            if c and rng.random() < 0.2 and case.target_kind != "prob":
                w[int(rng.integers(c))] = 0.0
            dtype = np.dtype(FLOATS[int(rng.integers(2))])
            kw["weight"] = place(
                rng,
                case.bufs,
                (c,),
                dtype,
                fill=w.astype(dtype),
                **random_layout(rng, (c,), dtype.itemsize, allow_zero=False, allow_misalign=True),
            )
    if rng.random() < 0.3:
        r = rng.random()
        if r < 0.05:
            kw["sample_weight"] = np.ones(lead, dtype=np.int32)
            case.bad("integer sample_weight")
        elif r < 0.1:
            kw["sample_weight"] = np.ones((*lead, 2))
            case.bad("sample_weight of the wrong shape")
        else:
            s = rng.uniform(0, 2, lead)
            if n and rng.random() < 0.3:
                s.flat[int(rng.integers(n))] = 0.0
            if n and rng.random() < 0.1:
                s.flat[int(rng.integers(n))] = float(rng.choice([-1.0, np.nan, -np.inf]))
                case.bad("negative or NaN sample_weight")
            dtype = np.dtype(FLOATS[int(rng.integers(2))])
            kw["sample_weight"] = place(
                rng,
                case.bufs,
                lead,
                dtype,
                fill=s.astype(dtype),
                **random_layout(rng, lead, dtype.itemsize, allow_zero=False, allow_misalign=True),
            )
    if rng.random() < 0.5:
        r = rng.random()
        kw["reduction"] = (
            ["none", "mean", "sum"][int(rng.integers(3))]
            if r < 0.95
            else [None, "MEAN", "avg", 1][int(rng.integers(4))]
        )
        if r >= 0.95:
            case.bad(f"reduction={kw['reduction']!r}")
    if rng.random() < 0.3:
        r = rng.random()
        if r < 0.85:
            kw["label_smoothing"] = [0.0, 0.1, 1.0, float(rng.random()), np.float32(0.25)][
                int(rng.integers(5))
            ]
        else:
            kw["label_smoothing"] = [
                -0.1,
                1.5,
                np.nan,
                np.inf,
                10**400,
                "0.1",
                True,
                1j,
                np.complex128(0.1 + 1j),
                np.bool_(False),
            ][int(rng.integers(10))]
            case.bad(f"label_smoothing={kw['label_smoothing']!r}")
    if rng.random() < 0.3:
        r = rng.random()
        if r < 0.85:
            kw["z_loss"] = [0.0, 1e-4, 0.5, 3, np.float64(2e-3)][int(rng.integers(5))]
        else:
            kw["z_loss"] = [
                -1e-4,
                np.nan,
                np.inf,
                -np.inf,
                10**400,
                None,
                "1",
                1j,
                np.complex64(1e-3 + 1e-3j),
                -(10**400),
            ][int(rng.integers(10))]
            case.bad(f"z_loss={kw['z_loss']!r}")
    if rng.random() < 0.25:
        # softcap / logit_scale (issue 6). Valid values for float64 logits only: in float32 the
        # transformed logits are rounded, so a confident row's tiny loss carries an error relative
        # to |z''| that the spec's float32 tolerance does not cover (tests/test_logit_transform.py
        # tests them at ordinary sizes); invalid ones for every dtype.
        r = rng.random()
        if r < 0.8 and native == np.float64:
            kw["softcap"] = [None, 5.0, 30.0, np.float32(12.5), 1e4][int(rng.integers(5))]
            kw["logit_scale"] = [1.0, 0.0, 0.5, -2.0, np.float64(1.25), 3][int(rng.integers(6))]
        elif r >= 0.8:
            name = ["softcap", "logit_scale"][int(rng.integers(2))]
            kw[name] = (
                [0.0, -1.0, np.nan, np.inf, "30", True, 1j, 10**400]
                if name == "softcap"
                else [np.nan, np.inf, -np.inf, None, "1", 1j, np.complex128(1)]
            )[int(rng.integers(8 if name == "softcap" else 7))]
            case.bad(f"{name}={kw[name]!r}")
    if rng.random() < 0.4:
        kw["return_lse"] = bool(rng.random() < 0.5)
    if rng.random() < 0.4:
        r = rng.random()
        if r < 0.85:
            kw["n_threads"] = [None, 1, 2, 3, np.int64(2), 2**40][int(rng.integers(6))]
        else:
            kw["n_threads"] = [0, -1, 2.0, True, "2"][int(rng.integers(5))]
            case.bad(f"n_threads={kw['n_threads']!r}")
    if "ignore_index" in case.__dict__:
        kw["ignore_index"] = case.ignore_index
    reduction = kw.get("reduction", "mean")
    if with_grad and rng.random() < 0.4:
        r = rng.random()
        if r < 0.45:
            kw["grad_output"] = [0.0, -1.5, 2, np.float32(0.5), 1e-3, np.nan][int(rng.integers(6))]
        elif r < 0.85:
            g = rng.uniform(-2, 2, lead)
            dtype = np.dtype([np.float32, np.float64, np.int32][int(rng.integers(3))])
            kw["grad_output"] = place(
                rng,
                case.bufs,
                lead,
                dtype,
                fill=g.astype(dtype),
                **random_layout(rng, lead, dtype.itemsize, allow_zero=True, allow_misalign=True),
            )
            if reduction != "none" and lead != ():
                case.bad(f"an array grad_output for reduction={reduction!r}")
        else:
            kw["grad_output"] = [np.ones((*lead, 3)), "1", 1j, np.zeros(lead, np.complex64)][
                int(rng.integers(4))
            ]
            g = kw["grad_output"]
            bad_shape = isinstance(g, np.ndarray) and g.dtype.kind == "f"
            case.bad("grad_output of the wrong shape" if bad_shape else "grad_output of a bad type")
    keys = ", ".join(
        f"{k}={v!r}" if not isinstance(v, np.ndarray) else f"{k}={v.dtype}{v.shape}"
        for k, v in kw.items()
    )
    case.notes.append(keys)
    return kw


def make_out(case, arr, native, target, kw):
    """out= for cross_entropy_with_grad (None when not drawn)."""
    rng = case.rng
    r = rng.random()
    if r < 0.5 or native is None or arr.ndim == 0 or case.logits_is_list:
        return None
    native = case.half or native  # the gradient's dtype
    if r < 0.65:  # in place
        case.notes.append("out=logits")
        if not arr.flags.writeable:
            case.bad("out=logits read-only")
        elif not arr.dtype.isnative:
            case.bad("out=logits byte-swapped")
        elif not arr.flags.aligned:
            case.bad("out=logits misaligned")
        elif arr.size and any(s == 0 and n > 1 for s, n in zip(arr.strides, arr.shape)):
            # (an empty array repeats nothing, whatever its strides: spec, "Since v1")
            case.bad("out=logits with repeated elements")
        case.out_view = arr
        return arr
    if r < 0.75 and arr.ndim and arr.size and np.dtype(native).itemsize == arr.itemsize:
        # a view of the logits' own memory in another layout: flipped, or shifted
        base = arr.base if isinstance(arr.base, np.ndarray) else None
        if rng.random() < 0.5 or base is None:
            ax = int(rng.integers(arr.ndim))
            out = np.flip(arr, axis=ax)
            case.notes.append(f"out=flip(logits, {ax})")
        else:
            shift = int(rng.choice([1, -1, 2])) * arr.itemsize
            offset = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]
            lo = offset + sum(min(0, (n - 1) * s) for n, s in zip(arr.shape, arr.strides))
            hi = offset + sum(max(0, (n - 1) * s) for n, s in zip(arr.shape, arr.strides))
            if lo + shift < 0 or hi + shift + arr.itemsize > base.nbytes:
                shift = 0
            out = np.ndarray(
                arr.shape, arr.dtype, buffer=base, offset=offset + shift, strides=arr.strides
            )
            case.notes.append(f"out=logits shifted by {shift} bytes")
        same = out.__array_interface__["data"][0] == arr.__array_interface__["data"][0] and all(
            a == b for a, b, n in zip(out.strides, arr.strides, out.shape) if n > 1
        )
        if not out.dtype.isnative or not out.flags.aligned or not out.flags.writeable:
            case.bad("out: not native, aligned, writeable")
        elif out.size and any(s == 0 and n > 1 for s, n in zip(out.strides, out.shape)):
            case.bad("out with repeated elements")
        elif not same and np.shares_memory(out, arr):
            case.bad("out overlaps the logits in another layout")
        case.out_view = out if out.flags.writeable else None
        return out
    if r < 0.8:
        kind = int(rng.integers(6))
        case.bad(f"hostile out #{kind}")
        out = [
            lambda: np.empty(arr.shape, dtype=np.float32 if case.half else np.float16),
            lambda: np.empty((*arr.shape[:-1], arr.shape[-1] + 1), dtype=native),
            lambda: np.empty(arr.shape, dtype=native)[...].view(),
            lambda: np.zeros(arr.shape, dtype=native).tolist(),
            lambda: np.broadcast_to(np.zeros(arr.shape[-1:], dtype=native), arr.shape),
            lambda: np.empty(arr.shape, dtype=np.dtype(native).newbyteorder()),
        ][kind]()
        if kind == 2:
            out.flags.writeable = False
        case.notes.append(f"out hostile #{kind}")
        return out
    shape = arr.shape
    layout = random_layout(
        rng, shape, np.dtype(native).itemsize, allow_zero=True, allow_misalign=True
    )
    out = place(rng, case.bufs, shape, native, fill=np.nan, **layout)
    case.notes.append(f"out {out.dtype}{out.shape} strides {out.strides}")
    if not out.flags.aligned:
        case.bad("misaligned out")
    elif out.size and any(s == 0 and n > 1 for s, n in zip(out.strides, out.shape)):
        case.bad("out with repeated elements")
    else:
        # an input placed in out's memory: out must not overlap it
        if rng.random() < 0.3 and out.size and out.flags.c_contiguous and "weight" in kw:
            flat = out.reshape(-1)
            if flat.size >= arr.shape[-1]:
                kw["weight"] = flat[: arr.shape[-1]]
                kw["weight"][...] = 1.0
                case.bad("out overlaps weight")
    case.out_view = out
    return out


def run_case(case):
    # drawing the case (casts of huge values to small dtypes) and the reference may overflow;
    # the call itself runs under the suite's settings, where a NumPy warning is an error
    with np.errstate(all="ignore"):
        prepared = prepare_case(case)
    if prepared is not None:
        prepared()


def prepare_case(case):
    """Draw the case; returns the function that calls xentc and checks the outcome."""
    rng = case.rng
    r = rng.random()
    fn = (
        "cross_entropy_with_grad"
        if r < 0.4
        else "cross_entropy"
        if r < 0.75
        else ["logsumexp", "softmax", "log_softmax"][int(rng.integers(3))]
    )
    case.fn = fn
    for_rows = fn in ("logsumexp", "softmax", "log_softmax")
    as_passed, arr, values64, native = make_logits(case, for_rows)
    if for_rows:
        return lambda: run_rows_case(case, as_passed, arr, values64, native)
    valid_so_far = not case.reasons
    if valid_so_far:
        target, kind = make_target(case, arr, native)
    else:  # an ordinary target of any shape: the logits' error must win
        target, kind = np.zeros(arr.shape[:-1], np.int64), "index"
    case.target_kind = kind
    kw = make_options(case, arr, native, fn == "cross_entropy_with_grad")
    out = None
    if fn == "cross_entropy_with_grad":
        out = make_out(case, arr, native, target, kw)
        if out is not None:
            kw["out"] = out
    # values the reference reads, taken before the call (out=logits overwrites them)
    with np.errstate(invalid="ignore", over="ignore"):
        ref_args = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        ref_target = np.array(target) if isinstance(target, np.ndarray) else target
    return lambda: call_and_check(
        case, fn, as_passed, target, kw, values64, native, ref_target, kind, ref_args, out
    )


def call_and_check(
    case, fn, as_passed, target, kw, values64, native, ref_target, kind, ref_args, out
):
    case.bufs.snapshot()
    # arrays outside the guarded buffers (hostile ones, mostly): compared as copies
    loose = {
        k: v
        for k, v in [("target", target), *kw.items()]
        if isinstance(v, np.ndarray)
        and k != "out"
        and v.dtype != object
        and not any(np.may_share_memory(v, b) for b in case.bufs.items)
    }
    copies = {k: v.copy() for k, v in loose.items()}
    result = call(case, getattr(xentc, fn), as_passed, target, **kw)
    case.bufs.check([case.out_view] if result is not None else [], str(case))
    for k, v in loose.items():
        assert v.tobytes() == copies[k].tobytes(), f"{k} was modified; {case}"
    if result is None:
        return
    with np.errstate(all="ignore"):
        check_xent(case, fn, result, values64, native, ref_target, kind, ref_args, out)


def call(case, fn, *args, **kw):
    """The call's result, or None when it raised as the oracle allows."""
    trace = os.environ.get("XENTC_FUZZ_TRACE")
    if trace:  # a crash kills the process: this file then names the case that did it
        with open(trace, "w") as f:
            f.write(f"{case}\n")
    try:
        result = fn(*args, **kw)
    except (TypeError, ValueError) as err:
        assert case.expect in (ERROR, EITHER), f"unexpected {type(err).__name__}: {err}; {case}"
        if case.expect == EITHER:
            case.notes.append(f"refused: {err}")
        return None
    except Exception as err:  # noqa: BLE001 (the point of the test: only TypeError / ValueError)
        pytest.fail(f"raised {type(err).__name__}: {err}; {case}", pytrace=False)
    assert case.expect in (OK, EITHER), f"returned instead of raising; {case}"
    return result


def run_rows_case(case, as_passed, arr, values64, native):
    rng = case.rng
    nd = arr.ndim
    r = rng.random()
    if r < 0.9 and nd:
        axis = int(rng.integers(-nd, nd))
    else:
        axis = [nd, -nd - 1, 1.0, None, "0", True][int(rng.integers(6))]
        if not (isinstance(axis, int) and not isinstance(axis, bool) and nd and -nd <= axis < nd):
            case.bad(f"axis={axis!r}")
    if nd == 0:
        case.bad("0-d x")
    case.notes.append(f"axis={axis!r}")
    case.bufs.snapshot()
    fn = getattr(xentc, case.fn)
    result = call(case, fn, as_passed, axis=axis)
    case.bufs.check([], str(case))
    if result is None:
        return
    with np.errstate(all="ignore"):
        check_rows(case, result, values64, native, axis)


def check_rows(case, result, values64, native, axis):
    assert isinstance(result, np.ndarray) and result.dtype == native, f"result {result!r}; {case}"
    moved = np.moveaxis(values64, axis, -1)
    if moved.shape[-1] == 0:
        want_shape = moved.shape[:-1] if case.fn == "logsumexp" else values64.shape
        assert result.shape == want_shape, f"shape {result.shape}; {case}"
        if case.fn == "logsumexp":
            assert np.all(result == -np.inf), f"logsumexp of nothing: {result}; {case}"
        return
    tol = TOL[np.dtype(native)]
    ref = {"logsumexp": ref_logsumexp, "softmax": ref_softmax, "log_softmax": ref_log_softmax}
    expected = ref[case.fn](values64, axis=axis)
    assert result.shape == expected.shape, f"shape {result.shape} vs {expected.shape}; {case}"
    got = result.astype(np.float64)
    if case.fn != "logsumexp":
        # rows whose max is not finite follow scipy's NaN / inf patterns, not the reference's
        # all-NaN rows (tests/test_reference.py checks them against scipy)
        finite = np.isfinite(np.moveaxis(values64, axis, -1).max(axis=-1, initial=-np.inf))
        finite &= ~np.isnan(np.moveaxis(values64, axis, -1)).any(axis=-1)
        keep = np.moveaxis(np.broadcast_to(finite[..., None], moved.shape), -1, axis)
        got, expected = got[keep], expected[keep]
    np.testing.assert_allclose(
        got,
        cast_like(expected, native),
        rtol=tol["rtol"],
        atol=tol["atol"],
        equal_nan=True,
        err_msg=str(case),
    )


def check_half_grad(grad, expected, dtype, scale, msg):
    """A float16 gradient: its float32 computation within the float32 tolerance (scaled to a
    unit-size loss), then rounded to float16: within one float16 ulp more; NaN where NaN."""
    assert grad.dtype == dtype and grad.shape == expected.shape, f"grad {grad.dtype}; {msg}"
    got = grad.astype(np.float64)
    expected = cast_like(expected, dtype)  # beyond float16's range: +-inf
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"grad NaN pattern; {msg}")
    mag = np.where(np.isfinite(expected), np.abs(expected), 0.0)
    bound = (
        np.spacing(mag.astype(np.float16)).astype(np.float64)
        + TOL[np.dtype(np.float32)]["grad_atol"] / scale
    )
    bad = np.flatnonzero((got != expected) & ~(np.abs(got - expected) <= bound) & ~nan)
    assert bad.size == 0, (
        f"grad {got.flat[bad[0]]!r} vs {expected.flat[bad[0]]!r} (bound "
        f"{bound.flat[bad[0]]:.3g}); {msg}"
    )


def cast_like(expected, dtype):
    """The float64 expectation as the result's dtype can hold it: beyond its range, +-inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        held = np.asarray(expected, dtype=np.float64).astype(dtype).astype(np.float64)
    return np.where(np.isinf(held) & np.isfinite(expected), held, expected)


def check_xent(case, fn, result, values64, native, target, kind, kw, out):
    reduction = kw.get("reduction", "mean")
    options = {
        k: kw[k]
        for k in (
            "weight",
            "sample_weight",
            "ignore_index",
            "label_smoothing",
            "z_loss",
            "softcap",
            "logit_scale",
        )
        if k in kw
    }
    options = {
        k: (
            float(v)
            if k in ("label_smoothing", "z_loss", "softcap", "logit_scale") and v is not None
            else v
        )
        for k, v in options.items()
    }
    with np.errstate(all="ignore"):
        ref_loss, ref_lse = ref_cross_entropy(values64, target, reduction=reduction, **options)
    return_lse = kw.get("return_lse", False)
    parts = list(result) if (return_lse or fn == "cross_entropy_with_grad") else [result]
    loss = parts[0]
    # 'none' rows are of the logits' dtype (a float32 row may overflow to inf); 'mean' and
    # 'sum' are Python floats, summed in float64
    want = cast_like(ref_loss, native) if reduction == "none" else ref_loss
    check_loss(loss, want, native, str(case), reduction=reduction)
    if return_lse:
        lse = parts[1]
        assert isinstance(lse, np.ndarray) and lse.dtype == native, f"lse {lse!r}; {case}"
        assert lse.shape == values64.shape[:-1], f"lse shape {lse.shape}; {case}"
        tol = TOL[np.dtype(native)]
        np.testing.assert_allclose(
            lse.astype(np.float64),
            cast_like(ref_lse, native),
            rtol=tol["rtol"],
            atol=tol["atol"],
            equal_nan=True,
            err_msg=f"lse: {case}",
        )
    if fn != "cross_entropy_with_grad":
        assert len(parts) == (2 if return_lse else 1)
        return
    grad = parts[-1]
    grad_output = kw.get("grad_output")
    with np.errstate(all="ignore"):
        expected = ref_grad(
            values64, target, reduction=reduction, grad_output=grad_output, **options
        )
    scale = unit_grad_scale(
        values64, target, {"reduction": reduction, **options}, grad_output, ref_lse
    ) / max(1.0, abs(options.get("logit_scale", 1.0)))
    if case.half is not None:
        check_half_grad(grad, expected, case.half, scale, str(case))
    else:
        check_grad(grad, expected, native, scale, str(case))
    if out is not None:
        assert out.size == 0 or np.shares_memory(grad, out), f"grad not in out; {case}"
        assert grad.shape == values64.shape, f"grad shape {grad.shape}; {case}"


# ---- the budget --------------------------------------------------------------------------------


def budget():
    cases = os.environ.get("XENTC_FUZZ_CASES")
    seconds = float(os.environ.get("XENTC_FUZZ_SECONDS", "3"))
    return (int(cases), math.inf) if cases else (sys.maxsize, seconds)


def fuzz(seed, max_cases, seconds, only=None):
    """Run cases until the budget is spent; returns how many ran."""
    start = time.perf_counter()
    if only is not None:
        run_case(Case(seed, only))
        return 1
    count = 0
    while count < max_cases and time.perf_counter() - start < seconds:
        run_case(Case(seed, count))
        count += 1
    return count


def test_fuzz_boundary(capsys):
    seed = int(os.environ.get("XENTC_FUZZ_SEED", "0"))
    only = os.environ.get("XENTC_FUZZ_CASE")
    max_cases, seconds = budget()
    start = time.perf_counter()
    count = fuzz(seed, max_cases, seconds, None if only is None else int(only))
    elapsed = time.perf_counter() - start
    assert count > 0
    if "XENTC_FUZZ_SECONDS" in os.environ or "XENTC_FUZZ_CASES" in os.environ:
        with capsys.disabled():
            print(f"\nxentc fuzz: {count} cases in {elapsed:.1f} s (seed {seed})")


def main():
    import argparse

    parser = argparse.ArgumentParser(description="Fuzz xentc's public functions.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cases", type=int, default=sys.maxsize)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    count = fuzz(args.seed, args.cases, args.seconds)
    print(
        f"xentc fuzz: {count} cases in {time.perf_counter() - start:.1f} s (seed {args.seed}), "
        "no failure"
    )


if __name__ == "__main__":
    main()
