"""xentc against the float64 reference (tests/reference.py), and the reference against closed forms.

(a) The reference itself: closed-form values, high-precision (mpmath) values on near-certain rows,
    and its gradient against central differences.
(b) Hypothesis sweeps: cross_entropy, cross_entropy_with_grad (loss, lse, grad, out=), logsumexp,
    softmax and log_softmax (also against scipy.special) over shapes, dtypes, layouts and options.
(c) Named cases: C = 256000, confident rows, the entry points against each other, inputs left
    unmodified, and the edge rows of semantics.md (including its deliberate deviations from torch,
    which test_torch.py must not compare).
"""

import math

import numpy as np
import pytest
import scipy.special
from conftest import TOL
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    check_grad,
    check_loss,
    ref_cross_entropy,
    ref_denominator,
    ref_grad,
    ref_log_softmax,
    ref_logsumexp,
    ref_softmax,
    unit_grad_scale,
)
from strategies import (
    SWEEP,
    array_cases,
    check_with_grad_case,
    confident_rows,
    describe_array,
    layout_of,
    with_layout,
    xent_cases,
)

try:
    import xentc

    XENTC_MISSING = ""
except ImportError as exc:  # the reference tests below still run
    xentc = None
    XENTC_MISSING = f"xentc is not importable ({exc}); build and install it first"


needs_xentc = pytest.mark.skipif(xentc is None, reason=XENTC_MISSING)


# ---------------------------------------------------------------------------------------------
# (a) The reference on closed forms


def _mp_row(z, y, dps=60):
    """-log p_y and 1 - p_y of one row in mpmath at `dps` digits (exact log-sum-exp)."""
    import mpmath

    with mpmath.workdps(dps):
        zs = [mpmath.mpf(v) for v in z]
        total = mpmath.fsum(mpmath.exp(v) for v in zs)
        others = mpmath.fsum(mpmath.exp(v) for k, v in enumerate(zs) if k != y)
        return float(mpmath.log(total) - zs[y]), float(others / total), float(mpmath.log(total))


def test_ref_logsumexp_known_rows():
    inf = math.inf
    rows = {
        (1.0, 2.0, 3.0): math.log(math.e + math.e**2 + math.e**3),
        (0.0,) * 5: math.log(5.0),
        (1000.0, 1000.0): 1000.0 + math.log(2.0),  # no overflow: shifted by the max
        (-1000.0, -1000.0, -1000.0): -1000.0 + math.log(3.0),
        (-inf, 0.0): 0.0,  # a masked class adds nothing
        (-inf, -inf): -inf,  # scipy: all -inf -> -inf
        (inf, 0.0): inf,  # scipy: a +inf -> +inf
        (math.nan, 0.0): math.nan,
        (5.0,): 5.0,
    }
    for row, expected in rows.items():
        got = ref_logsumexp(np.array(row))
        np.testing.assert_allclose(got, expected, rtol=1e-15, equal_nan=True, err_msg=f"row={row}")
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(
                got,
                scipy.special.logsumexp(np.array(row)),
                rtol=1e-14,
                equal_nan=True,
                err_msg=f"scipy, row={row}",
            )
    # Along another axis of a 3-D array.
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    np.testing.assert_allclose(
        ref_logsumexp(x, axis=1), scipy.special.logsumexp(x, axis=1), rtol=1e-15
    )
    np.testing.assert_allclose(ref_softmax(x, axis=0), scipy.special.softmax(x, axis=0), rtol=1e-14)
    np.testing.assert_allclose(
        ref_log_softmax(x, axis=-2), scipy.special.log_softmax(x, axis=-2), rtol=1e-14
    )


@pytest.mark.parametrize("c", [1, 2, 7, 1000])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_ref_uniform_logits_give_log_c(c, label_smoothing, weighted):
    # Uniform logits: p = 1/C for every class, so every -log p_k is log C whatever the target,
    # weights (the mean divides them out) or smoothing; lse = a + log C.
    a = 1.25
    logits = np.full((3, c), a)
    weight = np.linspace(0.5, 2.0, c) if weighted else None
    w = np.ones(c) if weight is None else weight
    eps, log_c = label_smoothing, math.log(c)
    for target in (np.array([0, c - 1, c // 2]), np.full((3, c), 1.0 / c)):
        loss, lse = ref_cross_entropy(logits, target, weight=weight, label_smoothing=eps)
        if target.dtype.kind == "f":  # sum_k w_k t'_k log C per row, over N rows
            expected = log_c * math.fsum(w) / c
        else:  # [(1-eps) w_y + (eps/C) W] log C per row, over sum_i w_y
            wy = math.fsum(w[target])
            expected = log_c * ((1 - eps) * wy + eps * 3 * math.fsum(w) / c) / wy
        assert loss == pytest.approx(expected, rel=1e-14, abs=1e-15), f"target {target.dtype}"
        np.testing.assert_allclose(lse, a + log_c, rtol=1e-15)
        z = 0.01
        loss_z, _ = ref_cross_entropy(logits, target, label_smoothing=eps, z_loss=z)
        assert loss_z == pytest.approx(log_c + z * (a + log_c) ** 2, rel=1e-15)
        # Each row's gradient sums to 0 (softmax is shift-invariant).
        grad = ref_grad(logits, target, weight=weight, label_smoothing=eps)
        np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=1e-15)


def test_ref_single_class():
    # C == 1: p = 1, loss 0, gradient 0; with z_loss a row's loss is zl * z^2, its gradient 2 zl z.
    logits = np.array([[3.0], [-2.0]])
    for target in (np.array([0, 0]), np.ones((2, 1))):
        for reduction in ("mean", "sum"):
            loss, lse = ref_cross_entropy(logits, target, reduction=reduction, label_smoothing=0.2)
            assert loss == 0.0
            np.testing.assert_array_equal(lse, [3.0, -2.0])
            np.testing.assert_array_equal(ref_grad(logits, target, reduction=reduction), 0.0)
        loss, _ = ref_cross_entropy(logits, target, reduction="none", z_loss=0.5)
        np.testing.assert_allclose(loss, [4.5, 2.0], rtol=1e-15)
        np.testing.assert_allclose(
            ref_grad(logits, target, reduction="none", z_loss=0.5), [[3.0], [-2.0]], rtol=1e-15
        )


@pytest.mark.parametrize("gap", [1e-6, 1e-10, 1e-15, 1e-30])
def test_ref_confident_row_matches_mpmath(gap):
    # p_y = 1 - gap: the loss ~ gap and the true-class gradient p_y - 1 ~ -gap must both be
    # accurate relative to their own size, not to lse.
    others = math.log(gap / 3)
    for shift in (0.0, 40.0):
        z = [shift, shift + others, shift + others - 0.5, shift + others + 0.25]
        loss_mp, one_minus_p_mp, lse_mp = _mp_row(z, 0)
        loss, lse = ref_cross_entropy(np.array([z]), np.array([0]), reduction="sum")
        assert loss == pytest.approx(loss_mp, rel=1e-14), f"shift={shift}"
        assert lse[0] == pytest.approx(lse_mp, rel=1e-15)
        for target in (np.array([0]), np.array([[1.0, 0.0, 0.0, 0.0]])):
            g = ref_grad(np.array([z]), target, reduction="sum")
            assert g[0, 0] == pytest.approx(-one_minus_p_mp, rel=1e-14), f"shift={shift}, {target}"


def test_ref_masked_classes():
    inf = math.inf
    z = np.array([[0.5, -inf, 1.5], [-inf, 2.0, -inf]])
    # Row 1's only finite logit is its target: loss 0 (semantics.md).
    loss, lse = ref_cross_entropy(z, np.array([2, 1]), reduction="none")
    np.testing.assert_allclose(loss, [math.log1p(math.exp(-1.0)), 0.0], rtol=1e-15)
    np.testing.assert_allclose(lse, [1.5 + math.log1p(math.exp(-1.0)), 2.0], rtol=1e-15)
    np.testing.assert_array_equal(ref_grad(z, np.array([2, 1]), reduction="none")[:, 1], [0.0, 0.0])
    # A masked target class: +inf loss, finite gradient p - e_y.
    loss, _ = ref_cross_entropy(z, np.array([1, 1]), reduction="none")
    assert loss[0] == inf
    g = ref_grad(z, np.array([1, 1]), reduction="none")
    np.testing.assert_allclose(g[0], [1 / (1 + math.e), -1.0, math.e / (1 + math.e)], rtol=1e-15)
    # With label smoothing any masked class gives +inf (as torch).
    loss, _ = ref_cross_entropy(z, np.array([2, 1]), reduction="none", label_smoothing=0.1)
    assert np.all(loss == inf)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"label_smoothing": 0.2},
        {"weight": True, "sample_weight": True},
        {"weight": True, "sample_weight": True, "label_smoothing": 0.1, "z_loss": 0.05},
        {"z_loss": 0.3},
    ],
    ids=["plain", "smoothing", "weights", "everything", "z_loss"],
)
def test_ref_grad_matches_central_differences(target_kind, reduction, opts, rng):
    n, c = 4, 5
    logits = rng.standard_normal((n, c)) * 2
    if target_kind == "index":
        target = np.array([0, 4, -100, 2])  # one ignored row
    else:
        target = rng.dirichlet(np.ones(c), size=n)
    kwargs = {
        "reduction": reduction,
        "label_smoothing": opts.get("label_smoothing", 0.0),
        "z_loss": opts.get("z_loss", 0.0),
        "weight": rng.uniform(0.5, 2.0, c) if opts.get("weight") else None,
        "sample_weight": np.array([0.5, 0.0, 1.0, 2.0]) if opts.get("sample_weight") else None,
    }
    go = rng.standard_normal(n) if reduction == "none" else 0.75

    def f(x):  # the scalar whose gradient is the vector-Jacobian product with go
        loss, _ = ref_cross_entropy(x, target, **kwargs)
        return float(np.dot(go, loss)) if reduction == "none" else go * loss

    h = 1e-5
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(logits.shape):
        up, down = logits.copy(), logits.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (f(up) - f(down)) / (2 * h)
    analytic = ref_grad(logits, target, grad_output=go, **kwargs)
    np.testing.assert_allclose(
        analytic, numeric, rtol=1e-7, atol=1e-9, err_msg=f"{target_kind} {reduction} {opts}"
    )


# ---------------------------------------------------------------------------------------------
# (b) Hypothesis sweeps against the reference


@needs_xentc
@SWEEP
@given(case=xent_cases(), return_lse=st.booleans())
def test_cross_entropy_matches_reference(case, return_lse):
    msg = case.describe()
    dtype = case.logits.dtype
    ref_loss, ref_lse = ref_cross_entropy(case.logits, case.target, **case.options)
    result = xentc.cross_entropy(
        case.logits, case.target, **case.options, return_lse=return_lse, n_threads=case.n_threads
    )
    loss = result[0] if return_lse else result
    check_loss(loss, ref_loss, dtype, msg, reduction=case.reduction)
    if return_lse:
        lse = result[1]
        assert isinstance(lse, np.ndarray) and lse.dtype == dtype, f"lse {type(lse)}; {msg}"
        assert lse.shape == case.logits.shape[:-1], f"lse shape {lse.shape}; {msg}"
        np.testing.assert_allclose(
            lse.astype(np.float64),
            ref_lse,
            rtol=TOL[dtype]["rtol"],
            atol=TOL[dtype]["atol"],
            err_msg=f"lse: {msg}",
        )


@needs_xentc
@SWEEP
@given(case=xent_cases(with_grad=True))
def test_cross_entropy_with_grad_matches_reference(case):
    check_with_grad_case(case, case.describe())


_ARRAY_FNS = {
    "logsumexp": (ref_logsumexp, scipy.special.logsumexp),
    "softmax": (ref_softmax, scipy.special.softmax),
    "log_softmax": (ref_log_softmax, scipy.special.log_softmax),
}


@needs_xentc
@settings(SWEEP, max_examples=min(150, SWEEP.max_examples))
@given(case=array_cases(), name=st.sampled_from(sorted(_ARRAY_FNS)))
def test_array_functions_match_reference_and_scipy(case, name):
    x, axis, layout = case
    msg = f"xentc.{name}(x=[{layout_of(x)}, layout={layout}], axis={axis})"
    ref_fn, scipy_fn = _ARRAY_FNS[name]
    got = getattr(xentc, name)(x, axis=axis)
    assert isinstance(got, np.ndarray) and got.dtype == x.dtype, f"result {type(got)}; {msg}"
    tol = TOL[x.dtype]
    expected = ref_fn(x, axis=axis)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}; {msg}"
    got = got.astype(np.float64)
    np.testing.assert_allclose(
        got, expected, rtol=tol["rtol"], atol=tol["atol"], err_msg=f"vs reference: {msg}"
    )
    np.testing.assert_allclose(
        got,
        scipy_fn(x.astype(np.float64), axis=axis),
        rtol=tol["rtol"],
        atol=tol["atol"],
        err_msg=f"vs scipy.special.{name}: {msg}",
    )


# ---------------------------------------------------------------------------------------------
# (c) Named cases


@needs_xentc
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"label_smoothing": 0.1, "z_loss": 1e-4},
    ],
    ids=["plain", "smoothing+z_loss"],
)
def test_large_vocabulary_float32(options, rng):
    # C = 256000 in float32: the spec's accuracy must hold at LLM vocabulary sizes, where a float32
    # running sum of 256000 terms would lose ~1e-4 relative.
    n, c = 3, 256000
    logits = (rng.standard_normal((n, c)) * np.array([[3.0], [10.0], [1.0]])).astype(np.float32)
    target = rng.integers(0, c, size=n)
    logits[2, target[2]] = logits[2].max() + 30  # a confident row at this vocabulary size
    ref_loss, ref_lse = ref_cross_entropy(logits, target, reduction="none", **options)
    expected = ref_grad(logits, target, reduction="mean", **options)
    msg = f"logits=[{layout_of(logits)}], target={target}, {options}"

    loss_none, lse = xentc.cross_entropy(
        logits, target, reduction="none", return_lse=True, **options
    )
    check_loss(loss_none, ref_loss, np.float32, msg, reduction="none")
    np.testing.assert_allclose(lse.astype(np.float64), ref_lse, rtol=1e-5, atol=1e-6, err_msg=msg)
    loss, grad = xentc.cross_entropy_with_grad(logits, target, **options)
    check_loss(loss, math.fsum(ref_loss) / n, np.float32, msg, reduction="mean")
    check_grad(grad, expected, np.float32, float(n), msg)  # mean denominator n, unit weights


@needs_xentc
@pytest.mark.parametrize("gap", [1e-6, 1e-10], ids=["gap1e-6", "gap1e-10"])
@pytest.mark.parametrize("shift", [0.0, 100.25], ids=["max0", "max100"])
@pytest.mark.parametrize("target_kind", ["index", "onehot"])
def test_confident_row(dtype, gap, shift, target_kind):
    # p_y = 1 - gap. The true-class gradient p_y - 1 must be accurate to a few ulp of itself, so it
    # cannot come from rounding p_y first; the loss (~gap) within TOL even though lse is ~100.
    # The other logits are shift - d with d on a 1/64 grid, so z_k - max is exact in float32 too:
    # the only errors left are the kernel's own.
    c, y = 5, 2
    logits = confident_rows(c, y, gap, shift, dtype)
    target = np.array([y, 1]) if target_kind == "index" else np.eye(c)[[y, 1]].astype(dtype)
    msg = f"confident row p_y = 1 - {gap:g}, max logit {shift}, {dtype}, target {target_kind}"

    ref_loss, _ref_lse = ref_cross_entropy(logits, target, reduction="none")
    expected = ref_grad(logits, target, reduction="sum")
    loss, grad = xentc.cross_entropy_with_grad(logits, target, reduction="none")
    check_loss(loss, ref_loss, dtype, msg, reduction="none")
    check_grad(grad, expected, dtype, 1.0, msg)
    ulp = np.finfo(dtype).eps
    np.testing.assert_allclose(
        grad[0, y],
        expected[0, y],
        rtol=8 * ulp,
        atol=0,
        err_msg=f"true-class gradient p_y - 1 not accurate to 8 ulp: {msg}",
    )


@needs_xentc
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("layout", ["C", "transposed"])
def test_entry_points_agree(dtype, target_kind, layout, rng):
    shape = (3, 4, 37)
    logits = with_layout((rng.standard_normal(shape) * 3).astype(dtype), layout)
    if target_kind == "index":
        target = rng.integers(0, shape[-1], size=shape[:-1])
        target[0, 1] = -100
    else:
        target = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    opts = {
        "weight": rng.uniform(0.5, 2, shape[-1]),
        "sample_weight": rng.uniform(0, 2, shape[:-1]),
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
    }
    msg = f"logits=[{layout_of(logits)}], target={target_kind}, {dtype}"
    tol = TOL[dtype]
    ulps = {"rtol": 4 * np.finfo(dtype).eps, "atol": 4 * np.finfo(dtype).tiny}

    for reduction in ("none", "mean", "sum"):
        a = xentc.cross_entropy(logits, target, reduction=reduction, **opts)
        b, _ = xentc.cross_entropy_with_grad(logits, target, reduction=reduction, **opts)
        np.testing.assert_allclose(
            a, b, **ulps, err_msg=f"cross_entropy vs cross_entropy_with_grad {reduction}: {msg}"
        )
    none = xentc.cross_entropy(logits, target, reduction="none", **opts)
    total = xentc.cross_entropy(logits, target, reduction="sum", **opts)
    mean = xentc.cross_entropy(logits, target, reduction="mean", **opts)
    np.testing.assert_allclose(
        math.fsum(none.astype(np.float64).ravel()),
        total,
        rtol=tol["rtol"],
        err_msg=f"sum('none') vs 'sum': {msg}",
    )
    den = ref_denominator(
        logits, target, weight=opts["weight"], sample_weight=opts["sample_weight"]
    )
    np.testing.assert_allclose(
        mean, total / den, rtol=tol["rtol"], err_msg=f"'mean' vs 'sum' / D: {msg}"
    )

    _, lse = xentc.cross_entropy(logits, target, return_lse=True, **opts)
    np.testing.assert_allclose(
        lse,
        xentc.logsumexp(logits, axis=-1),
        **ulps,
        err_msg=f"return_lse vs xentc.logsumexp: {msg}",
    )
    np.testing.assert_allclose(
        xentc.softmax(logits, axis=-1),
        np.exp(xentc.log_softmax(logits, axis=-1).astype(np.float64)),
        rtol=tol["rtol"],
        atol=tol["atol"],
        err_msg=f"softmax vs exp(log_softmax): {msg}",
    )
    # The gradient of 'none' with a per-row grad_output is the weighted sum of the rows' gradients:
    # 'sum' with grad_output 1 equals 'none' with ones.
    go = rng.standard_normal(shape[:-1])
    _, g_none = xentc.cross_entropy_with_grad(
        logits, target, reduction="none", grad_output=go, **opts
    )
    _, g_sum = xentc.cross_entropy_with_grad(logits, target, reduction="sum", **opts)
    _, g_ones = xentc.cross_entropy_with_grad(logits, target, reduction="none", **opts)
    np.testing.assert_allclose(g_sum, g_ones, **ulps, err_msg=f"'sum' vs 'none' grad: {msg}")
    np.testing.assert_allclose(
        g_none,
        g_ones * go[..., None],
        rtol=tol["rtol"],
        atol=tol["atol"],
        err_msg=f"'none' grad with grad_output vs ones * grad_output: {msg}",
    )


@needs_xentc
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_inputs_unmodified(dtype, target_kind, rng):
    shape = (6, 19)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    if target_kind == "index":
        target = rng.integers(0, shape[-1], size=shape[0]).astype(np.int32)
        target[2] = -100
    else:
        target = rng.dirichlet(np.ones(shape[-1]), size=shape[0]).astype(np.float32)
    args = {
        "logits": logits,
        "target": target,
        "weight": rng.uniform(0.5, 2, shape[-1]),
        "sample_weight": with_layout(rng.uniform(0, 2, shape[0]), "strided"),
        "grad_output": rng.standard_normal(shape[0]),
    }
    copies = {k: v.copy() for k, v in args.items()}
    opts = {
        "weight": args["weight"],
        "sample_weight": args["sample_weight"],
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "reduction": "none",
        "return_lse": True,
    }
    xentc.cross_entropy(logits, target, **opts)
    xentc.cross_entropy_with_grad(logits, target, grad_output=args["grad_output"], **opts)
    xentc.logsumexp(args["logits"])
    xentc.softmax(args["logits"])
    xentc.log_softmax(args["logits"])
    for name, before in copies.items():
        np.testing.assert_array_equal(
            args[name],
            before,
            err_msg=f"{name} was modified "
            f"({describe_array(name, args[name])}, target={target_kind})",
        )


# Edge rows (semantics.md), each checked against the reference: row values, target, options.
# The "deviation" ones differ from torch on purpose and are compared here only.
_INF, _NAN = math.inf, math.nan
EDGE_ROWS = {
    # masked classes: probability 0, gradient 0; a row whose only finite logit is the target: loss 0
    "masked-classes": ([0.5, -_INF, 1.5, -_INF], 2, {}),
    "only-target-finite": ([-_INF, 3.0, -_INF, -_INF], 1, {}),
    # a masked target class: loss +inf, finite gradient p - e_y
    "masked-target": ([0.5, -_INF, 1.5, 0.0], 1, {}),
    # with label smoothing any masked class gives +inf (as torch)
    "masked-smoothing": ([0.5, -_INF, 1.5, 0.0], 2, {"label_smoothing": 0.1}),
    # counted rows that are not finite: loss NaN, gradient row all NaN (as torch)
    "nan-row": ([0.5, _NAN, 1.5, 0.0], 2, {}),
    "all-minus-inf": ([-_INF] * 4, 2, {}),
    "plus-inf": ([0.5, _INF, 1.5, 0.0], 2, {}),
    # deviation: an ignored row holding NaN / inf has loss 0 and gradient exactly 0
    "deviation-ignored-nan": ([0.5, _NAN, 1.5, 0.0], -100, {}),
    "deviation-ignored-inf": ([_INF, 0.0, -_INF, 1.0], -100, {}),
    # deviation: a zero sample weight row holding NaN / all -inf likewise
    "deviation-zero-weight-nan": ([_NAN, _NAN, 1.5, 0.0], 0, {"sample_weight_row": 0.0}),
    "deviation-zero-weight-minus-inf": ([-_INF] * 4, 0, {"sample_weight_row": 0.0}),
    # deviation: a soft target with t' == 0 on a masked class contributes exactly 0 (torch: NaN)
    "deviation-soft-zero-on-masked": ([0.5, -_INF, 1.5, 0.0], [0.25, 0.0, 0.5, 0.25], {}),
}


@needs_xentc
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("name", sorted(EDGE_ROWS))
def test_edge_rows_match_reference(name, reduction, dtype, rng):
    row, row_target, extra = EDGE_ROWS[name]
    c = len(row)
    # The edge row sits between two ordinary rows, which must keep their finite loss and gradient.
    logits = (rng.standard_normal((3, c)) * 2).astype(dtype)
    logits[1] = row
    soft = isinstance(row_target, list)
    if soft:
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

    ref_loss, ref_lse = ref_cross_entropy(logits, target, **opts)
    expected = ref_grad(logits, target, **opts)
    loss, lse, grad = xentc.cross_entropy_with_grad(logits, target, return_lse=True, **opts)
    check_loss(loss, ref_loss, dtype, msg, reduction=reduction)
    np.testing.assert_allclose(
        lse.astype(np.float64),
        ref_lse,
        rtol=TOL[dtype]["rtol"],
        equal_nan=True,
        err_msg=f"lse (computed for every row): {msg}",
    )
    scale = unit_grad_scale(logits, target, opts, None, ref_lse)
    check_grad(grad, expected, dtype, scale, msg)
    # Exact zeros where the semantics say so (not merely small ones).
    if name.startswith(("deviation-ignored", "deviation-zero-weight")):
        np.testing.assert_array_equal(
            grad[1], 0.0, err_msg=f"gradient of a row that does not count: {msg}"
        )
        if reduction == "none":
            assert loss[1] == 0.0, msg
    masked = np.isneginf(logits[1]) & np.isfinite(expected[1]) & (expected[1] == 0)
    assert np.all(np.abs(grad[1][masked]) < np.finfo(dtype).tiny), (
        f"masked classes must get a gradient within a denormal of 0, got {grad[1]}: {msg}"
    )


@needs_xentc
@pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax"])
def test_array_functions_nonfinite_rows_match_scipy(name, dtype):
    # semantics.md: match scipy.special for float32/float64 also on masked (-inf), all -inf, +inf
    # and NaN rows.
    x = np.array(
        [
            [0.5, -_INF, 1.5, 0.0],
            [-_INF, -_INF, -_INF, -_INF],
            [0.5, _INF, 1.5, 0.0],
            [_NAN, 0.0, 1.0, 2.0],
            [-_INF, 3.0, -_INF, -_INF],
        ],
        dtype=dtype,
    )
    with np.errstate(all="ignore"):
        expected = getattr(scipy.special, name)(x.astype(np.float64), axis=-1)
    got = getattr(xentc, name)(x, axis=-1)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(
            got[i].astype(np.float64),
            expected[i],
            rtol=TOL[dtype]["rtol"],
            atol=TOL[dtype]["atol"],
            equal_nan=True,
            err_msg=f"xentc.{name} row {x[i].tolist()} ({dtype})",
        )


@needs_xentc
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_nothing_counts(reduction, dtype):
    # All rows ignored, or every counted row with sample weight 0: 'mean' nan, 'sum' 0.0, grad 0.
    logits = np.arange(12.0, dtype=dtype).reshape(3, 4)
    cases = [
        (np.array([-100, -100, -100]), None),
        (np.array([0, 1, -100]), np.array([0.0, 0.0, 1.0])),
    ]
    for target, sample_weight in cases:
        msg = f"target={target} sample_weight={sample_weight} {reduction} {dtype}"
        loss, grad = xentc.cross_entropy_with_grad(
            logits, target, sample_weight=sample_weight, reduction=reduction, z_loss=1e-3
        )
        expected, _ = ref_cross_entropy(
            logits, target, sample_weight=sample_weight, reduction=reduction, z_loss=1e-3
        )
        check_loss(loss, expected, dtype, msg, reduction=reduction)
        np.testing.assert_array_equal(grad, 0.0, err_msg=msg)
