"""The kernel's backward mode (src_c/xc_backward.inc) through its public entry points:
cross_entropy(..., return_lse=True, lse_dtype=np.float64) (the forward, keeping each row's lse in
float64) and cross_entropy_grad (the gradient alone, in one pass over the logits from that lse).
xentc.torch's autograd Function is built on them.

(a) A hypothesis sweep against the float64 reference (tests/reference.py) over shapes, layouts,
    targets and every option, with grad_output and out= (fresh and strided, or the logits in
    place), on the instruction set in use (test_isa_parity.py covers the others); the gradient
    also against cross_entropy_with_grad's.
(b) Named cases: each kernel path (short rows, whole rows, few long rows split over threads,
    streaming stores) bitwise across n_threads, confident rows, the edge rows of semantics.md,
    nothing counting, N == 0, and the errors of the lse argument.
"""

import math

import numpy as np
import pytest
from conftest import TOL, thread_counts
from hypothesis import given
from reference import check_grad, check_loss, ref_cross_entropy, ref_grad, unit_grad_scale
from strategies import SWEEP, confident_rows, layout_of, strided_out, with_layout, xent_cases

try:
    import xentc
    from xentc import cross_entropy_with_grad

    XENTC_MISSING = ""
except ImportError as exc:
    xentc = None
    XENTC_MISSING = f"xentc is not importable ({exc}); build and install it first"

pytestmark = [
    pytest.mark.skipif(xentc is None, reason=XENTC_MISSING),
]


def _grad_close(a, b, dtype, scale, msg):
    """Two xentc gradients of one case within the spec's gradient tolerance of each other."""
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_allclose(
            a.astype(np.float64) * scale,
            b.astype(np.float64) * scale,
            rtol=0,
            atol=TOL[np.dtype(dtype)]["grad_atol"],
            equal_nan=True,
            err_msg=msg,
        )


@SWEEP
@given(case=xent_cases(with_grad=True))
def test_backward_mode_matches_reference(case):
    msg = case.describe()
    dtype = case.logits.dtype
    opts = dict(case.options, n_threads=case.n_threads)
    ref_loss, ref_lse = ref_cross_entropy(case.logits, case.target, **case.options)
    expected = ref_grad(case.logits, case.target, **case.options, grad_output=case.grad_output)

    loss, lse = xentc.cross_entropy(
        case.logits, case.target, **opts, return_lse=True, lse_dtype=np.float64
    )
    check_loss(loss, ref_loss, dtype, msg, reduction=case.reduction)
    assert lse.dtype == np.float64 and lse.shape == case.logits.shape[:-1], msg
    # float64 storage, float32 accuracy for float32 logits: its sum of exp adds float32 terms
    np.testing.assert_allclose(
        lse, ref_lse, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"], err_msg=f"lse: {msg}"
    )

    logits, out, untouched = case.logits, None, None
    if case.out_kind == "fresh":
        out, untouched = strided_out(logits.shape, dtype)
    elif case.out_kind == "logits":
        # a private copy, overwritten in place (with_layout alone may hand back the same memory)
        logits = with_layout(np.array(case.logits), case.layout)
        out = logits
    grad = xentc.cross_entropy_grad(
        logits, case.target, lse, **opts, grad_output=case.grad_output, out=out
    )
    scale = unit_grad_scale(case.logits, case.target, case.options, case.grad_output, ref_lse)
    check_grad(grad, expected, dtype, scale, msg)
    _, fused = cross_entropy_with_grad(
        case.logits, case.target, **opts, grad_output=case.grad_output
    )
    _grad_close(grad, fused, dtype, scale, f"backward mode vs cross_entropy_with_grad: {msg}")
    if out is not None:
        assert np.shares_memory(grad, out), f"grad does not use out=; {msg}"
        np.testing.assert_array_equal(out, grad, err_msg=f"out holds something else; {msg}")
    if untouched is not None:
        assert untouched(), f"out=: memory outside the view was written; {msg}"
    if case.out_kind == "logits" and case.layout == "strided":
        buf = logits.base
        outside = np.ones(buf.shape, dtype=bool)
        outside[(slice(1, None, 2),) * buf.ndim] = False
        assert np.all(np.isnan(buf[outside])), f"in place: padding written; {msg}"


def _case(rng, shape, dtype, target_kind, *, layout="C"):
    c = shape[-1]
    logits = with_layout((rng.standard_normal(shape) * 4).astype(dtype), layout)
    if target_kind == "index":
        target = rng.integers(0, c, size=shape[:-1])
        target.reshape(-1)[::3] = -100
    else:
        target = rng.dirichlet(np.ones(c) * 0.3, size=shape[:-1]).astype(dtype)
    opts = {
        "weight": rng.uniform(0.2, 2.0, c),
        "sample_weight": rng.uniform(0, 2, shape[:-1]),
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
    }
    return logits, target, opts


# (N, C) per kernel path: short rows (C <= 128, index targets go a lane per row in the forward),
# whole rows in blocks, rows longer than a chunk (32768 classes) that the backward mode splits
# over threads when they are few, and a gradient of >= 8 MiB into a caller's out= (streamed).
PATHS = {
    "short": (200, 10),
    "rows": (70, 1000),
    "split": (3, 70001),
    "stream": (70, 32000),
}


# the large shapes in C order and float32 only (the small ones cover layouts and float64)
PATH_CASES = [
    (path, layout, dtype)
    for path in sorted(PATHS)
    for layout in ("C", "F")
    for dtype in (np.float32, np.float64)
    if path in ("short", "rows") or (layout == "C" and dtype == np.float32)
]


@pytest.mark.parametrize(
    ("path", "layout", "dtype"),
    PATH_CASES,
    ids=[f"{p}-{lay}-{np.dtype(d)}" for p, lay, d in PATH_CASES],
)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_paths_bitwise_across_threads(path, target_kind, layout, reduction, dtype, rng):
    shape = PATHS[path]
    logits, target, opts = _case(rng, shape, dtype, target_kind, layout=layout)
    opts["reduction"] = reduction
    go = rng.standard_normal(shape[:-1]) if reduction == "none" else 0.75
    msg = f"{path}: logits=[{layout_of(logits)}], target={target_kind}, {reduction}"
    _, lse = xentc.cross_entropy(logits, target, **opts, return_lse=True, lse_dtype=np.float64)
    grads = []
    for n in thread_counts():
        out = np.full(logits.shape, np.nan, dtype=dtype, order="C") if path == "stream" else None
        grads.append(
            xentc.cross_entropy_grad(
                logits, target, lse, **opts, grad_output=go, out=out, n_threads=n
            )
        )
        if n > 1:
            np.testing.assert_array_equal(
                grads[-1], grads[0], err_msg=f"n_threads={n} vs 1 differ: {msg}"
            )
    _, fused = cross_entropy_with_grad(logits, target, **opts, grad_output=go)
    scale = unit_grad_scale(logits, target, opts, go, lse)
    _grad_close(grads[0], fused, dtype, scale, f"backward mode vs cross_entropy_with_grad: {msg}")
    zc = logits.copy(order="K")
    inplace = xentc.cross_entropy_grad(zc, target, lse, **opts, grad_output=go, out=zc)
    assert np.shares_memory(inplace, zc), msg
    np.testing.assert_array_equal(inplace, grads[0], err_msg=f"out=logits differs: {msg}")


@pytest.mark.parametrize("gap", [1e-6, 1e-10], ids=["gap1e-6", "gap1e-10"])
@pytest.mark.parametrize("shift", [0.0, 100.25], ids=["max0", "max100"])
@pytest.mark.parametrize("target_kind", ["index", "onehot"])
def test_confident_row(dtype, gap, shift, target_kind):
    # As test_reference.py's: p_y = 1 - gap, and the true-class gradient p_y - 1 accurate to a
    # few ulp of itself, which expm1(z_y - lse) gives and a rounded p_y could not; at max 100 a
    # float32 lse would also have lost 4e-6 of z_y - lse.
    c, y = 5, 2
    logits = confident_rows(c, y, gap, shift, dtype)
    target = np.array([y, 1]) if target_kind == "index" else np.eye(c)[[y, 1]].astype(dtype)
    msg = f"confident row p_y = 1 - {gap:g}, max logit {shift}, {dtype}, target {target_kind}"
    expected = ref_grad(logits, target, reduction="sum")
    _, lse = xentc.cross_entropy(
        logits, target, reduction="sum", return_lse=True, lse_dtype=np.float64
    )
    grad = xentc.cross_entropy_grad(logits, target, lse, reduction="sum")
    check_grad(grad, expected, dtype, 1.0, msg)
    # Relative accuracy as far as the float64 lse carries it: z_y - lse is known to an ulp of
    # lse (1.4e-14 at lse ~ 100), which at p_y - 1 = -1e-10 is 1.6e-4 of it; and to the forward's
    # sum of exp, float32 terms for float32 logits.
    rtol = 8 * np.finfo(dtype).eps if dtype == np.float64 else 2e-6
    atol = 2 * float(np.spacing(np.abs(lse[0])))
    np.testing.assert_allclose(
        grad[0, y],
        expected[0, y],
        rtol=rtol,
        atol=atol,
        err_msg=f"true-class gradient p_y - 1: {msg}",
    )


def _edge_rows():
    from test_reference import EDGE_ROWS

    return EDGE_ROWS


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("name", sorted(_edge_rows()))
def test_edge_rows_match_reference(name, reduction, dtype, rng):
    row, row_target, extra = _edge_rows()[name]
    c = len(row)
    logits = (rng.standard_normal((3, c)) * 2).astype(dtype)
    logits[1] = row
    if isinstance(row_target, list):
        target = rng.dirichlet(np.ones(c), size=3).astype(dtype)
        target[1] = row_target
    else:
        target = np.array([0, row_target, c - 1])
    sample_weight = None
    if "sample_weight_row" in extra:
        sample_weight = np.array([1.0, extra["sample_weight_row"], 0.5])
    opts = {
        "reduction": reduction,
        "label_smoothing": extra.get("label_smoothing", 0.0),
        "sample_weight": sample_weight,
    }
    msg = f"{name}: row={row} target={row_target} {opts} {dtype}"
    _, ref_lse = ref_cross_entropy(logits, target, **opts)
    expected = ref_grad(logits, target, **opts)
    with np.errstate(all="ignore"):
        _, lse = xentc.cross_entropy(logits, target, **opts, return_lse=True, lse_dtype=np.float64)
        grad = xentc.cross_entropy_grad(logits, target, lse, **opts)
    check_grad(grad, expected, dtype, unit_grad_scale(logits, target, opts, None, ref_lse), msg)
    if name.startswith(("deviation-ignored", "deviation-zero-weight")):
        np.testing.assert_array_equal(grad[1], 0.0, err_msg=msg)
    masked = np.isneginf(logits[1]) & np.isfinite(expected[1]) & (expected[1] == 0)
    assert np.all(np.abs(grad[1][masked]) < np.finfo(dtype).tiny), msg


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_nothing_counts_and_empty(reduction, dtype):
    logits = np.arange(12.0, dtype=dtype).reshape(3, 4)
    target = np.array([-100, -100, -100])
    _, lse = xentc.cross_entropy(
        logits, target, reduction=reduction, return_lse=True, lse_dtype=np.float64
    )
    grad = xentc.cross_entropy_grad(logits, target, lse, reduction=reduction, z_loss=1e-3)
    np.testing.assert_array_equal(grad, 0.0)
    empty = np.zeros((0, 4), dtype=dtype)
    _, lse = xentc.cross_entropy(
        empty, np.zeros(0, np.int64), reduction=reduction, return_lse=True, lse_dtype=np.float64
    )
    assert lse.shape == (0,) and lse.dtype == np.float64
    grad = xentc.cross_entropy_grad(empty, np.zeros(0, np.int64), lse, reduction=reduction)
    assert grad.shape == (0, 4) and grad.dtype == dtype


def test_lse_errors():
    logits = np.zeros((3, 4), np.float32)
    target = np.array([0, 1, 2])
    out = np.full((3, 4), 5.0, np.float32)
    with pytest.raises(TypeError, match="lse"):
        xentc.cross_entropy_grad(logits, target, np.zeros(3, np.float32), out=out)
    with pytest.raises(ValueError, match="lse"):
        xentc.cross_entropy_grad(logits, target, np.zeros(4), out=out)
    with pytest.raises(ValueError, match="target"):
        xentc.cross_entropy_grad(logits, np.array([0, 1, 7]), np.zeros(3), out=out)
    np.testing.assert_array_equal(out, 5.0)  # nothing written on error
    # the flat (n_rows,) lse is accepted for (B, T, C) logits, as is the (B, T) one
    z = np.zeros((2, 3, 4))
    t = np.zeros((2, 3), np.int64)
    a = xentc.cross_entropy_grad(z, t, np.full(6, math.log(4)))
    b = xentc.cross_entropy_grad(z, t, np.full((2, 3), math.log(4)))
    np.testing.assert_array_equal(a, b)


def _half_dtype(name):
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 logits need ml_dtypes")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


TRANSFORMS = {
    "plain": (None, 1.0),
    "scale0.5": (None, 0.5),
    "cap5": (5.0, 1.0),
    "cap8-scale2": (8.0, 2.0),
}
# every path with each 16-bit dtype untransformed and with a soft-cap; the transforms on the
# paths of whole and short rows in float32 (plain float32: test_paths_bitwise_across_threads)
LOWP_CASES = (
    [(p, k, "plain") for p in sorted(PATHS) for k in ("float16", "bfloat16")]
    + [(p, k, "cap8-scale2") for p in sorted(PATHS) for k in ("float16", "bfloat16")]
    + [(p, "float32", t) for p in ("short", "rows", "split") for t in TRANSFORMS if t != "plain"]
)


@pytest.mark.parametrize(
    ("path", "kind", "transform"), LOWP_CASES, ids=["-".join(c) for c in LOWP_CASES]
)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_transform_and_half_logits(path, kind, transform, target_kind, rng):
    # The backward mode through the logit transform (the gradient wrt z'' times dz''/dz) and
    # with 16-bit logits (gradient computed in float32, rounded to their dtype once), against
    # cross_entropy_with_grad, bitwise across n_threads and the same in place.
    softcap, logit_scale = TRANSFORMS[transform]
    shape = PATHS[path]
    logits, target, opts = _case(rng, shape, np.float32, target_kind)
    logits = logits.astype(_half_dtype(kind))
    opts.update(softcap=softcap, logit_scale=logit_scale, reduction="none")
    go = rng.standard_normal(shape[:-1])
    msg = f"{path} {kind} softcap={softcap} logit_scale={logit_scale} target={target_kind}"
    _, lse = xentc.cross_entropy(logits, target, **opts, return_lse=True, lse_dtype=np.float64)
    _, ref_lse = xentc.cross_entropy(logits, target, **opts, return_lse=True)
    np.testing.assert_allclose(
        lse, ref_lse.astype(np.float64), rtol=1e-6, atol=1e-6, err_msg=f"lse: {msg}"
    )
    grads = [
        xentc.cross_entropy_grad(logits, target, lse, **opts, grad_output=go, n_threads=n)
        for n in thread_counts()
    ]
    for g in grads[1:]:
        np.testing.assert_array_equal(
            g.view(np.uint8), grads[0].view(np.uint8), err_msg=f"n_threads differ: {msg}"
        )
    assert grads[0].dtype == logits.dtype, msg
    _, fused = cross_entropy_with_grad(logits, target, **opts, grad_output=go)
    a, b = grads[0].astype(np.float64), fused.astype(np.float64)
    if kind == "float32":
        _grad_close(
            grads[0], fused, np.float32, unit_grad_scale(logits, target, opts, go, lse), msg
        )
    else:
        # both round a float32 gradient once: they may differ by one unit in the last place
        ulp = 2.0**-7 if kind == "bfloat16" else 2.0**-10
        np.testing.assert_allclose(
            a,
            b,
            rtol=ulp,
            atol=1e-6 * np.abs(go).max() * 4,
            err_msg=f"backward mode vs cross_entropy_with_grad: {msg}",
        )
    zc = logits.copy()
    inplace = xentc.cross_entropy_grad(zc, target, lse, **opts, grad_output=go, out=zc)
    assert np.shares_memory(inplace, zc), msg
    np.testing.assert_array_equal(
        inplace.view(np.uint8), grads[0].view(np.uint8), err_msg=f"out=logits differs: {msg}"
    )
