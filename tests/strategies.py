"""Hypothesis strategies for the xentc tests: shapes, dtypes, memory layouts, targets and options.

Hypothesis draws the *structure* of a case (shape, dtypes, layout, which options are on, a seed);
the values come from a NumPy generator seeded by the drawn seed. That keeps examples cheap to draw
and still reproducible and shrinkable. Logits are moderate (normal * 3); extreme values, N == 0
and non-finite rows have named tests instead.
"""

import itertools
import math
import os

import numpy as np
from conftest import TOL, thread_counts
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from reference import check_grad, check_loss, ref_cross_entropy, ref_grad, unit_grad_scale

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES = tuple(
    np.dtype(t) for t in (np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16)
)
REDUCTIONS = ("none", "mean", "sum")

# Memory layouts of one array, all holding the same values:
#   C, F         np.ascontiguousarray / np.asfortranarray
#   reversed     negative strides on every axis
#   strided      every other element of a larger buffer (padding = NaN, or 0 for integers, so a
#                kernel that reads outside the view shows up)
#   transposed   a swapaxes(0, 1) view of a C array: for (N, C) the class axis is strided, for
#                (B, T, C) the rows are out of memory order
#   readonly     a C array with writeable=False (a memmap or np.broadcast_to stand-in)
LAYOUTS = ("C", "F", "reversed", "strided", "transposed", "readonly")

# Sizes around SIMD widths (8 floats in AVX2, 16 in AVX-512) and their tails.
CLASS_COUNTS = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129, 255, 300)


# Two-dimensional layouts cut from a larger buffer, each (rows, columns, buffer shape) for values
# of shape (n, c); the buffer holds `fill` wherever the view is not, so that a read outside the
# view poisons a result and a write outside it shows.
def _padded_2d(layout, n, c):
    return {
        "rows-reversed": (slice(None, None, -1), slice(None), (n, c)),
        "cols-reversed": (slice(None), slice(None, None, -1), (n, c)),
        "every-other-row": (slice(None, None, 2), slice(None), (2 * n, c)),
        "every-other-col": (slice(None), slice(None, None, 2), (n, 2 * c)),
        "padded-rows": (slice(None), slice(1, c + 1), (n, c + 3)),
        "step-3x2": (slice(1, None, 3), slice(None, None, -2), (3 * n, 2 * c)),
        # the class axis with the big stride, the row axis with the small one
        "transposed-strided": (slice(None, None, 2), slice(None), (2 * c, n)),
    }[layout]


PADDED_2D = (
    "rows-reversed",
    "cols-reversed",
    "every-other-row",
    "every-other-col",
    "padded-rows",
    "step-3x2",
    "transposed-strided",
)


def with_layout(a, layout, fill=None):
    """A view with the values and shape of `a` in the given memory layout: LAYOUTS (any ndim),
    PADDED_2D and "misaligned" (two-dimensional `a`). "strided" and PADDED_2D views live in a
    buffer (their .base) filled with `fill` elsewhere: NaN for floats, 0 for integers unless
    given (an out-of-range class, say, so that a read outside the view raises)."""
    a = np.asarray(a)
    if fill is None:
        fill = np.nan if a.dtype.kind in "fc" else 0
    if a.ndim == 0:  # one element has one layout (np.ascontiguousarray would even make it 1-d)
        out = np.array(a)
        out.flags.writeable = layout != "readonly"
        return out
    if layout == "C" or (a.ndim < 2 and layout in ("F", "transposed")):
        return np.array(a, order="C")
    if layout == "F":
        return np.array(a, order="F")
    if layout == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "strided":
        buf = np.full(tuple(2 * n + 1 for n in a.shape), fill, dtype=a.dtype)
        view = buf[(slice(1, None, 2),) * a.ndim]
        view[...] = a
        return view
    if layout == "transposed":
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1)
    if layout == "readonly":
        out = np.array(a, order="C")
        out.flags.writeable = False
        return out
    if a.ndim != 2:
        raise ValueError(f"layout {layout!r} is for two-dimensional arrays; got {a.shape}")
    if layout == "misaligned":  # one byte off the dtype's alignment, as a memmap at an odd offset
        raw = np.zeros(a.nbytes + 1, np.uint8)
        view = raw[1:].view(a.dtype).reshape(a.shape)
        view[...] = a
        assert not view.flags.aligned, "test setup: the view must be misaligned"
        return view
    if layout not in PADDED_2D:
        raise ValueError(f"unknown layout {layout!r}")
    rows, cols, shape = _padded_2d(layout, *a.shape)
    buf = np.full(shape, fill, dtype=a.dtype)
    if layout == "transposed-strided":
        buf[rows, cols] = a.T
        return buf[rows, cols].T
    buf[rows, cols] = a
    return buf[rows, cols]


def layout_of(a):
    """A short description of an array's memory layout for error messages."""
    a = np.asarray(a)
    flags = "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else "non-contiguous"
    ro = "" if a.flags.writeable else ", read-only"
    return f"{a.dtype} {a.shape} strides={a.strides} ({flags}{ro})"


def describe_array(name, a):
    if a is None:
        return f"{name}=None"
    if np.ndim(a) == 0 and not isinstance(a, np.ndarray):
        return f"{name}={a!r}"
    return f"{name}=[{layout_of(a)}]"


class XentCase:
    """One call of xentc.cross_entropy[_with_grad]: arrays, options and a description."""

    def __init__(
        self,
        *,
        logits,
        target,
        target_kind,
        layout,
        options,
        grad_output,
        n_threads,
        out_kind,
        seed,
    ):
        self.seed = seed  # of the NumPy generator that drew the values: with the rest, a reproducer
        self.logits = logits
        self.target = target
        self.target_kind = target_kind
        self.layout = layout
        # weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss
        self.options = options
        self.grad_output = grad_output
        self.n_threads = n_threads
        self.out_kind = out_kind  # None | "fresh" (a new array, strided) | "logits" (in place)

    @property
    def reduction(self):
        return self.options["reduction"]

    def describe(self):
        o = self.options
        return "; ".join(
            [
                f"logits=[{layout_of(self.logits)}, layout={self.layout}]",
                f"target={self.target_kind} [{layout_of(self.target)}]",
                describe_array("weight", o["weight"]),
                describe_array("sample_weight", o["sample_weight"]),
                f"ignore_index={o['ignore_index']}",
                f"reduction={o['reduction']!r}",
                f"label_smoothing={o['label_smoothing']}",
                f"z_loss={o['z_loss']}",
                describe_array("grad_output", self.grad_output),
                f"out={self.out_kind}",
                f"n_threads={self.n_threads}",
                f"seed={self.seed}",
            ]
        )

    __repr__ = describe


def _index_target(rng, batch_shape, c, dtype, ignore_index, ignored_fraction):
    target = rng.integers(0, c, size=batch_shape)
    if ignored_fraction:
        target = np.where(rng.random(batch_shape) < ignored_fraction, ignore_index, target)
    return np.asarray(target).astype(dtype)


def _prob_target(rng, shape, dtype, kind):
    if kind == "onehot":
        t = np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])]
    elif kind == "sparse":  # zeros in most classes: t' == 0 when label_smoothing == 0
        t = rng.random(shape) * (rng.random(shape) < 0.3)
        t[..., 0] += 1e-3  # keep each row's total positive
        t /= t.sum(axis=-1, keepdims=True)
    elif kind == "unnormalized":  # torch does not require rows summing to 1
        t = rng.random(shape) * 2
    else:  # "softmax": a dense distribution
        g = rng.standard_normal(shape) * 2
        t = np.exp(g - g.max(axis=-1, keepdims=True))
        t /= t.sum(axis=-1, keepdims=True)
    return t.astype(dtype)


@st.composite
def shapes(draw, max_rows=12):
    """(C,), (N, C) or (B, T, C) with N >= 1 (N == 0 has named tests)."""
    c = draw(st.one_of(st.integers(1, 40), st.sampled_from(CLASS_COUNTS)))
    ndim = draw(st.sampled_from((1, 2, 3)))
    if ndim == 1:
        return (c,)
    if ndim == 2:
        return (draw(st.integers(1, max_rows)), c)
    return (draw(st.integers(1, 3)), draw(st.integers(1, 4)), c)


@st.composite
def xent_cases(draw, *, with_grad=False):
    """A cross_entropy case covering every option. with_grad also draws grad_output and out."""
    shape = draw(shapes())
    batch, c = shape[:-1], shape[-1]
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    logits = with_layout((rng.standard_normal(shape) * 3).astype(dtype), layout)

    target_kind = draw(st.sampled_from(("index", "prob")))
    target_layout = draw(st.sampled_from(("C", "reversed", "strided", "transposed")))
    if target_kind == "index":
        tdtype = draw(st.sampled_from([d for d in INDEX_DTYPES if np.iinfo(d).max >= c]))
        if tdtype.kind == "u":
            # Unsigned targets cannot hold -100; 255 is the usual "void" label (segmentation).
            ignore_index = draw(st.sampled_from((255, 0)))
        else:
            ignore_index = draw(st.sampled_from((-100, -1, 0, c - 1)))
        ignored_fraction = draw(st.sampled_from((0.0, 0.3, 1.0)))
        target = _index_target(rng, batch, c, tdtype, ignore_index, ignored_fraction)
        target_kind = f"index({tdtype})"
    else:
        ignore_index = draw(st.sampled_from((-100, 0)))  # plays no part for probabilities
        pkind = draw(st.sampled_from(("softmax", "onehot", "sparse", "unnormalized")))
        target = _prob_target(rng, shape, draw(st.sampled_from(FLOAT_DTYPES)), pkind)
        target_kind = f"prob({pkind})"
    target = with_layout(target, target_layout)

    weight = None
    if draw(st.booleans()):
        w = rng.uniform(0.1, 2.0, size=c)
        if draw(st.booleans()):
            w[rng.random(c) < 0.2] = 0.0  # zero class weights
        weight = with_layout(
            w.astype(draw(st.sampled_from(FLOAT_DTYPES))), draw(st.sampled_from(("C", "strided")))
        )

    sample_weight = None
    if draw(st.booleans()):
        s = rng.uniform(0.0, 2.0, size=batch)
        s = np.where(rng.random(batch) < 0.25, 0.0, s)  # zero sample weights
        sample_weight = with_layout(
            s.astype(draw(st.sampled_from(FLOAT_DTYPES))),
            draw(st.sampled_from(("C", "reversed", "strided"))),
        )

    options = {
        "weight": weight,
        "sample_weight": sample_weight,
        "ignore_index": ignore_index,
        "reduction": draw(st.sampled_from(REDUCTIONS)),
        "label_smoothing": draw(st.sampled_from((0.0, 0.0, 0.1, 0.5, 1.0))),
        "z_loss": draw(st.sampled_from((0.0, 0.0, 1e-4, 1e-2, 0.1))),
    }

    grad_output = out_kind = None
    if with_grad:
        go_kinds = ("default", "scalar", "zero", "0-d")
        if options["reduction"] == "none":
            go_kinds += ("array", "array")
        go_kind = draw(st.sampled_from(go_kinds))
        if go_kind == "scalar":
            grad_output = draw(st.sampled_from((1.0, -1.5, 1.0 / 7.0, 3.0)))
        elif go_kind == "zero":
            grad_output = 0.0
        elif go_kind == "0-d":  # semantics.md: 0-d arrays count as scalars
            grad_output = np.array(0.5, dtype=draw(st.sampled_from(FLOAT_DTYPES)))
        elif go_kind == "array":
            go = rng.standard_normal(batch)
            grad_output = with_layout(
                go.astype(draw(st.sampled_from(FLOAT_DTYPES))),
                draw(st.sampled_from(("C", "reversed", "strided"))),
            )
        out_kinds = (None, "fresh") if layout == "readonly" else (None, "fresh", "logits")
        out_kind = draw(st.sampled_from(out_kinds))

    return XentCase(
        logits=logits,
        target=target,
        target_kind=target_kind,
        layout=layout,
        options=options,
        grad_output=grad_output,
        n_threads=draw(st.sampled_from(thread_counts())),
        out_kind=out_kind,
        seed=seed,
    )


@st.composite
def array_cases(draw):
    """(x, axis, layout) for logsumexp / softmax / log_softmax: 1 to 3 dims, any axis (negative
    too), every layout."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(
        draw(st.one_of(st.integers(1, 6), st.sampled_from(CLASS_COUNTS)))
        if k == 0
        else draw(st.integers(1, 6))
        for k in range(ndim)
    )
    shape = tuple(draw(st.permutations(shape)))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    axis = draw(st.integers(-ndim, ndim - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = with_layout((rng.standard_normal(shape) * 3).astype(dtype), layout)
    return x, axis, layout


# Explicit settings (not a conftest profile): deadline off because the reference is slow on purpose.
# XENTC_SWEEP_EXAMPLES lowers the count for the fast tier (make test-fast).
SWEEP = settings(
    max_examples=int(os.environ.get("XENTC_SWEEP_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pairwise(factors):
    """Rows (dicts) covering every pair of values of any two factors at least once: a greedy
    covering array (each row the full-product combination that covers the most pairs still
    uncovered; ties to the first in product order, so the list is deterministic). For options
    whose interactions are pairwise at most, it replaces the full product: 9 factors of 2-3
    values need ~10 rows instead of ~800."""
    names = list(factors)
    candidates = [dict(zip(names, values)) for values in itertools.product(*factors.values())]

    def pairs(row):
        return {(a, repr(row[a]), b, repr(row[b])) for a, b in itertools.combinations(names, 2)}

    uncovered = set().union(*(pairs(row) for row in candidates))
    rows = []
    while uncovered:
        best = max(candidates, key=lambda row: len(pairs(row) & uncovered))
        rows.append(best)
        uncovered -= pairs(best)
    return rows


def strided_out(shape, dtype, sentinel=7.0):
    """A writeable non-contiguous out= view and a check that nothing outside it was written."""
    buf = np.full(tuple(2 * n + 1 for n in shape), sentinel, dtype=dtype)
    inside = (slice(1, None, 2),) * len(shape)
    outside = np.ones(buf.shape, dtype=bool)
    outside[inside] = False
    return buf[inside], lambda: bool(np.all(buf[outside] == sentinel))


def _padding_untouched(view):
    """For a with_layout(..., "strided") view: a check that its NaN padding is still NaN."""
    buf = view.base
    outside = np.ones(buf.shape, dtype=bool)
    outside[(slice(1, None, 2),) * buf.ndim] = False
    return lambda: bool(np.all(np.isnan(buf[outside])))


def check_with_grad_case(case, msg):
    """xentc.cross_entropy_with_grad on a xent_cases(with_grad=True) case, its out= as the case
    says (none, a fresh strided view, or the logits themselves in its layout), against the
    float64 reference: loss, lse and gradient within the spec's tolerance, the gradient in out=,
    and nothing written outside out='s view."""
    import xentc  # here, not at the top: the strategies serve tests that skip without xentc

    dtype = case.logits.dtype
    ref_loss, ref_lse = ref_cross_entropy(case.logits, case.target, **case.options)
    expected = ref_grad(case.logits, case.target, **case.options, grad_output=case.grad_output)
    logits, out, untouched = case.logits, None, None
    if case.out_kind == "fresh":
        out, untouched = strided_out(logits.shape, dtype)
    elif case.out_kind == "logits":
        logits = with_layout(case.logits, case.layout)  # a private copy, overwritten in place
        out = logits
        if case.layout == "strided":
            untouched = _padding_untouched(logits)
    loss, lse, grad = xentc.cross_entropy_with_grad(
        logits,
        case.target,
        **case.options,
        grad_output=case.grad_output,
        out=out,
        return_lse=True,
        n_threads=case.n_threads,
    )
    check_loss(loss, ref_loss, dtype, msg, reduction=case.reduction)
    # lse is that of the logits as passed in, also when out=logits overwrote them.
    np.testing.assert_allclose(
        np.asarray(lse, np.float64),
        ref_lse,
        rtol=TOL[dtype]["rtol"],
        atol=TOL[dtype]["atol"],
        err_msg=f"lse: {msg}",
    )
    scale = unit_grad_scale(case.logits, case.target, case.options, case.grad_output, ref_lse)
    check_grad(grad, expected, dtype, scale, msg)
    if out is not None:
        assert np.shares_memory(grad, out), f"grad does not use out=; {msg}"
        np.testing.assert_array_equal(out, grad, err_msg=f"out holds something else; {msg}")
    if untouched is not None:
        assert untouched(), f"out=: memory outside the view was written; {msg}"


def confident_rows(c, y, gap, shift, dtype):
    """Two rows of c logits: a confident one, whose class y has p_y = 1 - gap and max `shift`,
    then an ordinary one. The other logits are shift - d with d on a 1/64 grid, so z_k - max is
    exact in float32 too: the only errors left are the kernel's own."""
    d = round(-math.log(gap / (c - 1)) * 64) / 64
    z = np.full(c, shift - d)
    z[y] = shift
    z[0] -= 0.5
    return np.stack([z, np.linspace(-1, 1, c)]).astype(dtype)
