"""Edge cases the spec and notes/semantics.md settle: empty inputs, C == 1, rows that do not count,
huge and non-finite logits, NaN isolation, return types, C = 256000, untouched inputs, leaks."""

import gc
import math
import tracemalloc

import numpy as np
import pytest
import scipy.special
from conftest import TOL
from reference import assert_close, ref_logsumexp, ref_result

import xentc

REDUCTIONS = ["mean", "sum", "none"]
NEG_INF = -np.inf


def both(logits, target, **kw):
    """(loss, lse, grad) from cross_entropy_with_grad, after checking cross_entropy agrees."""
    loss, lse, grad = xentc.cross_entropy_with_grad(logits, target, return_lse=True, **kw)
    kw.pop("grad_output", None)
    np.testing.assert_array_equal(
        xentc.cross_entropy(logits, target, **kw),
        loss,
        err_msg=f"cross_entropy != cross_entropy_with_grad, {kw}",
    )
    return loss, lse, grad


# ---- empty and degenerate shapes ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 7), (2, 0, 7), (0, 1)], ids=str)
@pytest.mark.parametrize("soft", [False, True], ids=["index", "probs"])
def test_no_rows(dtype, shape, soft):
    logits = np.zeros(shape, dtype)
    target = np.zeros(shape, dtype) if soft else np.zeros(shape[:-1], np.int64)
    for reduction in REDUCTIONS:
        case = f"N=0 shape={shape} soft={soft} reduction={reduction} dtype={dtype}"
        loss, lse, grad = both(logits, target, reduction=reduction)
        assert grad.shape == shape and grad.dtype == dtype, case
        assert lse.shape == shape[:-1] and lse.dtype == dtype, case
        if reduction == "none":
            assert isinstance(loss, np.ndarray) and loss.shape == shape[:-1], case
            assert loss.dtype == dtype, case
        elif reduction == "sum":
            assert type(loss) is float and loss == 0.0, case
        else:
            assert type(loss) is float and np.isnan(loss), f"{case}: 'mean' of nothing is nan"
    for fn in (xentc.logsumexp, xentc.softmax, xentc.log_softmax):
        assert fn(logits).shape == (shape[:-1] if fn is xentc.logsumexp else shape), fn.__name__


def test_one_class(rng, dtype):
    # C == 1: the only class is always the target; p == 1, so the loss and the gradient are 0
    # exactly, except for the z-loss term z_loss * lse**2 with lse == z.
    logits = (5 * rng.standard_normal((9, 1))).astype(dtype)
    target = np.zeros(9, np.int64)
    for reduction in REDUCTIONS:
        for kw in ({}, {"label_smoothing": 0.3}, {"weight": np.array([2.5])}):
            case = f"C=1 reduction={reduction} {kw} dtype={dtype}"
            loss, lse, grad = both(logits, target, reduction=reduction, **kw)
            assert np.all(np.asarray(loss) == 0), case
            assert np.all(grad == 0), case
            np.testing.assert_array_equal(lse, logits[:, 0], err_msg=case)
        kw = {"reduction": reduction, "z_loss": 0.01}
        loss, lse, grad = both(logits, target, **kw)
        assert_close(
            dtype,
            loss,
            ref_result(logits, target, **kw),
            f"C=1 z_loss {reduction}",
            got_grad=grad,
            got_lse=lse,
        )


# ---- rows that do not count ---------------------------------------------------------------------


def _check_nothing_counts(logits, target, case, **kw):
    for reduction in REDUCTIONS:
        loss, lse, grad = both(logits, target, reduction=reduction, **kw)
        c = f"{case} reduction={reduction}"
        if reduction == "mean":
            assert type(loss) is float and np.isnan(loss), f"{c}: mean over zero denominator: nan"
        elif reduction == "sum":
            assert type(loss) is float and loss == 0.0, c
        else:
            np.testing.assert_array_equal(loss, np.zeros(len(logits), logits.dtype), err_msg=c)
        np.testing.assert_array_equal(grad, np.zeros_like(logits), err_msg=f"{c}: grad all zeros")
        np.testing.assert_allclose(
            lse,
            ref_logsumexp(logits.astype(np.float64)),
            err_msg=f"{c}: lse",
            rtol=TOL[logits.dtype]["rtol"],
        )


def test_all_rows_ignored(rng, dtype):
    logits = rng.standard_normal((6, 5)).astype(dtype)
    _check_nothing_counts(logits, np.full(6, -100), "all ignored")
    _check_nothing_counts(logits, np.full(6, 3), "all ignored, ignore_index=3", ignore_index=3)
    _check_nothing_counts(
        logits,
        np.full(6, -100),
        "all ignored with options",
        z_loss=0.1,
        label_smoothing=0.2,
        weight=np.arange(1.0, 6.0),
    )


def test_all_counted_rows_have_zero_sample_weight(rng, dtype):
    logits = rng.standard_normal((6, 5)).astype(dtype)
    target = np.array([0, -100, 2, 3, -100, 4])
    _check_nothing_counts(logits, target, "zero sample weights", sample_weight=np.zeros(6))
    probs = np.full((6, 5), 0.2)
    _check_nothing_counts(logits, probs, "probs, zero sample weights", sample_weight=np.zeros(6))
    # Zero weight on the target classes only: every denominator term s_i * w[y_i] is 0.
    weight = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    loss = xentc.cross_entropy(logits, np.array([0, 2, 3, 4, 0, 2]), weight=weight)
    assert np.isnan(loss), "class weights zero on every target: mean is nan (torch)"


def test_ignore_index_inside_class_range(rng, dtype):
    logits = rng.standard_normal((8, 4)).astype(dtype)
    target = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    for reduction in REDUCTIONS:
        kw = {"ignore_index": 1, "reduction": reduction}
        loss, lse, grad = both(logits, target, **kw)
        assert_close(
            dtype,
            loss,
            ref_result(logits, target, **kw),
            f"ignore_index=1 {reduction}",
            got_grad=grad,
            got_lse=lse,
        )
        assert np.all(grad[target == 1] == 0), "rows with target == ignore_index get no gradient"


def test_non_counting_rows_stay_exact_zero_with_nan_logits(rng, dtype):
    # semantics.md: an ignored or zero-weight row has loss 0 and gradient 0 even if it holds NaN
    # (a deliberate deviation from torch); its lse is still computed (NaN here).
    logits = rng.standard_normal((5, 6)).astype(dtype)
    logits[1, 2] = np.nan
    logits[3, :] = np.nan
    target = np.array([0, -100, 2, 3, 4])
    sample_weight = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    loss, lse, grad = both(logits, target, reduction="none", sample_weight=sample_weight)
    for row in (1, 3):
        assert loss[row] == 0 and np.all(grad[row] == 0), f"non-counting NaN row {row}"
        assert np.isnan(lse[row]), f"lse of a NaN row {row} is NaN (scipy)"
    finite = [0, 2, 4]
    assert np.all(np.isfinite(loss[finite])) and np.all(np.isfinite(grad[finite])), (
        "counted finite rows stay finite next to non-counting NaN rows"
    )
    for reduction in ("mean", "sum"):
        assert np.isfinite(
            xentc.cross_entropy(logits, target, reduction=reduction, sample_weight=sample_weight)
        ), reduction


# ---- huge and non-finite logits -----------------------------------------------------------------


def test_huge_logits_are_finite(rng, dtype):
    big = 1e30 if dtype == np.float32 else 1e300
    logits = (rng.uniform(-1, 1, (8, 6)) * big).astype(dtype)
    logits[0] = [big, -big, 0, big, -big, big / 2]
    logits[1] = [-big, -big, -big, -big, -big, -big]
    target = np.array([1, 0, 2, 3, 4, 5, 0, 1])
    for reduction in REDUCTIONS:
        for kw in ({}, {"label_smoothing": 0.1}):
            kw = dict(kw, reduction=reduction)
            case = f"|logits| ~ {big} dtype={dtype} {kw}"
            loss, lse, grad = both(logits, target, **kw)
            assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)), case
            assert np.all(np.isfinite(lse)), case
            assert_close(
                dtype, loss, ref_result(logits, target, **kw), case, got_grad=grad, got_lse=lse
            )


def test_masked_classes(dtype):
    logits = np.array(
        [
            [0.0, NEG_INF, 1.0, NEG_INF],  # masked classes among finite ones
            [NEG_INF, 3.0, NEG_INF, NEG_INF],  # the only finite logit is the target
            [1.0, NEG_INF, 2.0, 0.5],
        ],  # the target's logit is -inf
        dtype,
    )
    target = np.array([2, 1, 1])
    loss, lse, grad = both(logits, target, reduction="none")
    finite = ref_result(logits[:1, [0, 2]], np.array([1]), reduction="none")
    assert_close(dtype, loss[:1], finite, "row with masked classes")
    np.testing.assert_allclose(
        grad[0, [0, 2]],
        finite.grad[0],
        rtol=0,
        atol=TOL[dtype]["grad_atol"],
        err_msg="grad of the finite classes next to masked ones",
    )
    tiny = np.finfo(dtype).tiny
    assert np.all(np.abs(grad[0, [1, 3]]) <= tiny), "masked classes: gradient 0 (or a denormal)"
    assert loss[1] == 0, "only finite logit is the target: loss exactly 0"
    assert np.all(np.abs(grad[1]) <= tiny), "only finite logit is the target: gradient 0"
    assert lse[1] == 3.0, "lse of a row whose only finite logit is 3.0"
    assert loss[2] == np.inf, "target logit -inf: infinite loss"
    assert np.all(np.isfinite(grad[2])), "target logit -inf: gradient finite (p - onehot)"
    p = np.exp(logits[2].astype(np.float64) - lse[2].astype(np.float64))
    np.testing.assert_allclose(
        grad[2],
        p - [0, 1, 0, 0],
        rtol=0,
        atol=TOL[dtype]["grad_atol"] * 10,
        err_msg="target logit -inf: grad is p - onehot",
    )
    assert xentc.cross_entropy(logits, target, reduction="sum") == np.inf, "sum with an inf row"

    # With label smoothing every class has a positive target weight: a masked class gives +inf.
    smooth = xentc.cross_entropy(logits[:2], target[:2], reduction="none", label_smoothing=0.1)
    assert np.all(smooth == np.inf), f"label_smoothing, masked classes: must be +inf, got {smooth}"


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_zero_weight_on_masked_class_with_target_mass(dtype, label_smoothing):
    # Spec, "Since v1": a class weight of 0 on a masked (-inf) class that carries probability
    # mass contributes 0, never NaN (torch gives 0 * inf = NaN here: a documented difference). A
    # zero weight removes the class as a zero target does; with a positive weight the same mass
    # makes the row's loss +inf. Written out in float64: t' = (1 - eps) t + eps / C,
    # loss = -sum_k w_k t'_k log p_k over the classes with w_k t'_k != 0,
    # grad_k = p_k sum_j w_j t'_j - w_k t'_k.
    logits = np.array(
        [[1.0, NEG_INF, 0.5, 2.0], [0.0, 1.0, NEG_INF, -1.0], [0.2, NEG_INF, NEG_INF, -0.7]], dtype
    )
    probs = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.2, 0.3]], dtype)
    weight = np.array([1.0, 0.0, 0.0, 2.0], dtype)
    z = logits.astype(np.float64)
    peak = z.max(axis=1, keepdims=True)
    log_p = z - peak - np.log(np.exp(z - peak).sum(axis=1, keepdims=True))
    t = (1 - label_smoothing) * probs.astype(np.float64) + label_smoothing / 4
    wt = weight.astype(np.float64) * t
    want_loss = -(wt * np.where(wt != 0, log_p, 0.0)).sum(axis=1)
    want_grad = np.exp(log_p) * wt.sum(axis=1, keepdims=True) - wt
    case = f"zero weight on masked classes, label_smoothing={label_smoothing}, dtype={dtype}"
    for reduction in REDUCTIONS:
        loss, _lse, grad = both(
            logits, probs, weight=weight, label_smoothing=label_smoothing, reduction=reduction
        )
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)), f"{case} {reduction}"
    loss, _lse, grad = both(
        logits, probs, weight=weight, label_smoothing=label_smoothing, reduction="none"
    )
    np.testing.assert_allclose(
        loss, want_loss, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"], err_msg=case
    )
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=TOL[dtype]["grad_atol"], err_msg=case)
    # The same mass on a masked class of positive weight: +inf, as without weights.
    positive = np.array([1.0, 1.0, 0.0, 2.0], dtype)
    loss = xentc.cross_entropy(
        logits, probs, weight=positive, label_smoothing=label_smoothing, reduction="none"
    )
    assert loss[0] == np.inf and np.isfinite(loss[1]), f"{case}: positive weight, {loss}"


def test_masked_classes_soft_targets(dtype):
    # semantics.md deviation from torch: a class with t' == 0 contributes 0 even when its logit is
    # -inf; with label smoothing t' > 0 everywhere, so the loss is +inf.
    logits = np.array([[0.0, NEG_INF, 1.0]], dtype)
    probs = np.array([[0.25, 0.0, 0.75]])
    loss, _lse, grad = both(logits, probs, reduction="none")
    ref = ref_result(logits[:, [0, 2]], probs[:, [0, 2]], reduction="none")
    assert_close(dtype, loss, ref, "soft targets, masked class with t == 0")
    assert np.all(np.isfinite(grad)) and abs(grad[0, 1]) <= np.finfo(dtype).tiny, (
        f"soft targets, masked class: finite grad, 0 on the masked class; got {grad}"
    )
    assert xentc.cross_entropy(logits, probs, label_smoothing=0.1) == np.inf, (
        "soft targets, masked class, label_smoothing=0.1: +inf"
    )


@pytest.mark.parametrize(
    "n_classes,start", [(2000, 0), (70001, 32768)], ids=["first-block", "second-chunk"]
)
def test_nan_among_leading_neg_inf(rng, dtype, n_classes, start):
    # A NaN in a run of -inf that fills whole blocks of the online pass (512 logits; and from a
    # chunk's start, where the running max restarts): the running max is still -inf there, and
    # the NaN must still reach the row's sum (torch: NaN loss, NaN gradient row).
    logits = rng.standard_normal((2, n_classes)).astype(dtype)
    logits[1, start : start + 1500] = NEG_INF
    logits[1, start + 7] = np.nan
    target = np.array([3, 2])
    for n_threads in (1, 2):
        loss, lse, grad = both(logits, target, reduction="none", n_threads=n_threads)
        case = f"NaN at {start + 7} among -inf, C={n_classes}, n_threads={n_threads}"
        assert np.isnan(loss[1]) and np.isnan(lse[1]), f"{case}: loss {loss[1]}, lse {lse[1]}"
        assert np.all(np.isnan(grad[1])), f"{case}: gradient row must be all NaN"
        assert np.all(np.isfinite(grad[0])) and np.isfinite(loss[0]), f"{case}: row 0 finite"


@pytest.mark.parametrize("bad", ["all-neg-inf", "pos-inf", "nan"])
def test_non_finite_rows(rng, dtype, bad):
    logits = rng.standard_normal((5, 4)).astype(dtype)
    clean = logits.copy()
    if bad == "all-neg-inf":
        logits[2] = NEG_INF
        lse_want = NEG_INF
    elif bad == "pos-inf":
        logits[2, 1] = np.inf
        lse_want = np.inf
    else:
        logits[2, 3] = np.nan
        lse_want = np.nan
    target = np.array([0, 1, 2, 3, 0])
    for reduction in REDUCTIONS:
        for kw in ({}, {"weight": np.arange(1.0, 5.0), "z_loss": 0.01, "label_smoothing": 0.1}):
            kw = dict(kw, reduction=reduction)
            case = f"{bad} row 2, counted, {kw}"
            loss, lse, grad = both(logits, target, **kw)
            np.testing.assert_array_equal(lse[2], lse_want, err_msg=f"lse {case} (scipy rules)")
            assert np.all(np.isnan(grad[2])), f"{case}: grad row must be all NaN, got {grad[2]}"
            c_loss, c_lse, c_grad = both(clean, target, **kw)
            others = [0, 1, 3, 4]
            np.testing.assert_array_equal(lse[others], c_lse[others], err_msg=case)
            if reduction == "none":
                assert np.isnan(loss[2]), case
                np.testing.assert_array_equal(loss[others], c_loss[others], err_msg=case)
                np.testing.assert_array_equal(grad[others], c_grad[others], err_msg=case)
            else:
                assert np.isnan(loss), f"{case}: the reduction of a NaN row is NaN"
                # The other rows' gradients are finite (for 'sum' exactly those of the clean run).
                assert np.all(np.isfinite(grad[others])), case
                if reduction == "sum":
                    np.testing.assert_array_equal(grad[others], c_grad[others], err_msg=case)
    # The same row, ignored: loss 0, gradient 0, lse still the scipy value.
    ignored = target.copy()
    ignored[2] = -100
    loss, lse, grad = both(logits, ignored, reduction="none")
    assert loss[2] == 0 and np.all(grad[2] == 0), f"{bad} row ignored: loss 0 and grad 0"
    np.testing.assert_array_equal(lse[2], lse_want, err_msg=f"{bad} row ignored: lse")


# ---- return types, outputs ----------------------------------------------------------------------


@pytest.mark.parametrize("other", [np.float32, np.float64], ids=["others-f32", "others-f64"])
@pytest.mark.parametrize("soft", [False, True], ids=["index", "probs"])
def test_return_types(rng, dtype, other, soft):
    logits = rng.standard_normal((4, 3, 5)).astype(dtype)
    target = np.full(logits.shape, 0.2, other) if soft else rng.integers(0, 5, (4, 3))
    kw = {"weight": np.ones(5, other), "sample_weight": np.ones((4, 3), other)}
    for reduction in REDUCTIONS:
        case = f"reduction={reduction} logits={dtype} others={np.dtype(other)} soft={soft}"
        results = [
            xentc.cross_entropy(logits, target, reduction=reduction, **kw),
            xentc.cross_entropy(logits, target, reduction=reduction, return_lse=True, **kw),
            xentc.cross_entropy_with_grad(logits, target, reduction=reduction, **kw),
            xentc.cross_entropy_with_grad(
                logits, target, reduction=reduction, return_lse=True, **kw
            ),
        ]
        assert not isinstance(results[0], tuple), case
        assert [len(r) for r in results[1:]] == [2, 2, 3], case
        for loss in (results[0], results[1][0], results[2][0], results[3][0]):
            if reduction == "none":
                assert isinstance(loss, np.ndarray) and loss.dtype == dtype, case
                assert loss.shape == (4, 3), case
            else:
                assert type(loss) is float, f"{case}: got {type(loss)}"
        for lse in (results[1][1], results[3][1]):
            assert isinstance(lse, np.ndarray) and lse.dtype == dtype and lse.shape == (4, 3), case
        for grad in (results[2][1], results[3][2]):
            assert isinstance(grad, np.ndarray) and grad.dtype == dtype, case
            assert grad.shape == logits.shape, case
    for fn in (xentc.logsumexp, xentc.softmax, xentc.log_softmax):
        assert fn(logits).dtype == dtype, fn.__name__


def test_grad_output_scaling(rng, dtype):
    logits = rng.standard_normal((7, 5)).astype(dtype)
    target = np.array([0, 1, 2, 3, 4, -100, 1])
    for reduction in ("mean", "sum"):
        loss1, g1 = xentc.cross_entropy_with_grad(logits, target, reduction=reduction)
        for go in (-2.0, 0.0, np.array(4.0), 0.5):
            case = f"{reduction} grad_output={go!r}"
            loss, g = xentc.cross_entropy_with_grad(
                logits, target, reduction=reduction, grad_output=go
            )
            assert loss == loss1, f"{case}: the loss is never scaled by grad_output"
            # Scaling by a power of two (or 0) is exact, so the product must match bitwise.
            np.testing.assert_array_equal(g, (g1 * dtype.type(go)).astype(dtype), err_msg=case)
    go = np.array([1.0, -1.0, 0.0, 2.0, 0.5, 4.0, -0.25])  # powers of 2: exact
    loss1, g1 = xentc.cross_entropy_with_grad(logits, target, reduction="none")
    loss, g = xentc.cross_entropy_with_grad(logits, target, reduction="none", grad_output=go)
    np.testing.assert_array_equal(loss, loss1, err_msg="'none': loss not scaled by grad_output")
    np.testing.assert_array_equal(g, g1 * go[:, None].astype(dtype), err_msg="'none' row scaling")
    # Gradient accumulation: 'sum' with grad_output = 1/D equals the 'mean' gradient.
    _, gm = xentc.cross_entropy_with_grad(logits, target, reduction="mean")
    _, gs = xentc.cross_entropy_with_grad(logits, target, reduction="sum", grad_output=1 / 6)
    np.testing.assert_allclose(
        gs,
        gm,
        rtol=TOL[dtype]["rtol"],
        atol=TOL[dtype]["atol"] / 6,
        err_msg="sum with grad_output=1/D vs mean",
    )


def test_large_vocabulary_float32():
    # C = 256000 in float32 against float64, row by row; includes confident rows whose loss is
    # far below their log-sum-exp (spec: compute (max - z_y) + log(sum), not a rounded lse - z_y).
    rng = np.random.default_rng(256000)
    n_classes = 256_000
    logits = rng.standard_normal((5, n_classes)).astype(np.float32)
    logits[1] *= 10
    target = np.array([5, 100, 255_999, 0, 77_777])
    logits[2, 255_999] = 40.0  # confident: loss ~ 256000 * exp(-40) ~ 1e-12 relative to lse ~ 40
    logits[3, 0] = 25.0
    logits[4, 77_777] = -30.0  # very wrong
    # the reference once, per row ('none'); 'mean' is its rows' mean (every row counts)
    ref = ref_result(logits, target, reduction="none")
    for reduction, rows in (("none", 1), ("mean", len(target))):
        loss, lse, grad = both(logits, target, reduction=reduction)
        want = ref.loss if reduction == "none" else math.fsum(ref.loss) / rows
        np.testing.assert_allclose(
            loss, want, rtol=1e-5, atol=1e-6, err_msg=f"C=256000 float32 loss, {reduction}"
        )
        np.testing.assert_allclose(lse, ref.lse, rtol=1e-5, atol=1e-6, err_msg="C=256000 lse")
        np.testing.assert_allclose(
            grad * rows * ref.unit,
            ref.grad * ref.unit,
            rtol=0,
            atol=1e-6,
            err_msg=f"C=256000 float32 grad, {reduction}",
        )
    np.testing.assert_allclose(xentc.logsumexp(logits), ref.lse, rtol=1e-5, err_msg="logsumexp")


def test_inputs_unmodified(rng, dtype):
    logits = rng.standard_normal((6, 5)).astype(dtype)
    logits[0, 1] = NEG_INF
    arrays = {
        "index": np.array([0, 1, 2, -100, 4, 3]),
        "probs": np.full((6, 5), 0.2),
        "weight": rng.uniform(0.5, 2, 5),
        "sample_weight": rng.uniform(0, 2, 6),
        "grad_output": rng.uniform(-1, 1, 6),
    }
    before = {k: v.copy() for k, v in arrays.items()}
    before["logits"] = logits.copy()
    a = arrays
    for target in (a["index"], a["probs"]):
        for reduction in REDUCTIONS:
            kw = {
                "weight": a["weight"],
                "sample_weight": a["sample_weight"],
                "reduction": reduction,
                "label_smoothing": 0.1,
                "z_loss": 0.01,
            }
            xentc.cross_entropy(logits, target, return_lse=True, **kw)
            go = a["grad_output"] if reduction == "none" else None
            xentc.cross_entropy_with_grad(logits, target, return_lse=True, grad_output=go, **kw)
    for fn in (xentc.logsumexp, xentc.softmax, xentc.log_softmax):
        fn(logits)
        fn(logits, axis=0)
    arrays["logits"] = logits
    for k, v in before.items():
        assert arrays[k].tobytes() == v.tobytes(), f"{k} was modified"


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not hasattr(tracemalloc, "start"), reason="needs tracemalloc")
def test_repeated_calls_do_not_leak():
    rng = np.random.default_rng(1000)
    # Strided rows go through the C scratch buffers: losing a 16 KiB row scratch per thread per
    # call would add >= 16 MiB of RSS over 1000 iterations (measured growth: ~0.2 MiB). A leaked
    # NumPy output (64 KiB per call) would leave >= 60 MiB traced by tracemalloc.
    logits = rng.standard_normal((4, 2 * 2048))[:, ::2]
    target = rng.integers(0, 2048, 4)
    out = np.empty(logits.shape)

    def calls():
        xentc.cross_entropy(logits, target, reduction="none", return_lse=True, n_threads=2)
        xentc.cross_entropy_with_grad(logits, target, return_lse=True, n_threads=2)
        xentc.cross_entropy_with_grad(logits, target, out=out, n_threads=2)
        xentc.softmax(logits)
        try:
            xentc.cross_entropy(logits, target + 5000)  # the error path must not leak either
        except ValueError:
            pass

    for _ in range(50):  # warm up allocator pools and the OpenMP thread pool
        calls()
    gc.collect()
    rss0 = _rss_bytes()
    tracemalloc.start()
    try:
        for _ in range(1000):
            calls()
        gc.collect()
        traced, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown = _rss_bytes() - rss0
    assert traced < 1 << 20, f"tracemalloc: {traced} bytes still allocated after 1000 calls"
    assert grown < 8 << 20, f"RSS grew by {grown} bytes over 1000 calls"


# ---- regressions found by tests/test_fuzz.py -----------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, NEG_INF], ids=["nan", "pos-inf", "neg-inf"])
def test_zero_mean_denominator_zeroes_every_gradient_row(dtype, bad):
    # Every target's class weight is 0, so the 'mean' denominator is 0: the mean is nan and the
    # whole gradient 0 (spec), also for a counted row holding NaN (or a non-finite max), which
    # got its NaN gradient row before.
    logits = np.array([[0.5, -1.0, 2.0], [bad, bad, bad], [1.0, 0.0, -1.0]], dtype=dtype)
    target = np.array([0, 0, 0])
    weight = np.array([0.0, 1.0, 1.0])
    for out in (None, "logits"):
        work = logits.copy()
        kw = {"out": work} if out else {}
        loss, lse, grad = xentc.cross_entropy_with_grad(
            work, target, weight=weight, return_lse=True, **kw
        )
        assert np.isnan(loss), f"mean over a zero denominator is nan, got {loss} (out={out})"
        assert np.all(grad == 0), f"gradient not all zero (out={out}): {grad}"
        with np.errstate(invalid="ignore"):
            expected_lse = scipy.special.logsumexp(logits.astype(np.float64), axis=-1)
        np.testing.assert_allclose(
            lse,
            expected_lse,
            rtol=TOL[logits.dtype]["rtol"],
            err_msg=f"lse of the logits as passed in (out={out})",
        )


def test_log_softmax_keeps_the_log_of_the_sum_beside_huge_logits(dtype):
    # Two tied maxima far beyond every other logit: log_softmax there is -log(2). It was computed
    # as lse - max, where lse = max + log(2) rounds back to max (1e150 in float64, 1e30 in
    # float32), giving 0. scipy.special.log_softmax gives -log(2).
    huge = 1e30 if dtype == np.float32 else 1e150
    x = np.array([[huge, 1.0, huge, -3.0], [1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    got = xentc.log_softmax(x)
    x64 = x.astype(np.float64)
    peak = x64.max(axis=1, keepdims=True)
    want = (x64 - peak) - np.log(np.exp(x64 - peak).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(got, want, rtol=TOL[x.dtype]["rtol"])
    np.testing.assert_allclose(xentc.softmax(x), np.exp(want), rtol=TOL[x.dtype]["rtol"])


def test_with_grad_takes_nested_lists(dtype):
    # cross_entropy took logits as a nested list (np.asarray, float64) while
    # cross_entropy_with_grad failed with AttributeError on the list's missing .shape.
    logits = [[0.5, -1.0, 2.0], [1.0, 0.0, -1.0]]
    target = np.array([2, 0])
    loss, grad = xentc.cross_entropy_with_grad(logits, target)
    assert grad.dtype == np.float64 and grad.shape == (2, 3)
    assert loss == xentc.cross_entropy(np.array(logits), target)
    np.testing.assert_array_equal(grad, xentc.cross_entropy_with_grad(np.array(logits), target)[1])
    out = np.empty((2, 3))
    assert xentc.cross_entropy_with_grad(logits, target, out=out)[1] is out


@pytest.mark.parametrize("view", ["flipped-row-axis", "restrided-row-axis"])
def test_out_differing_only_in_a_length_one_axis_is_in_place(rng, dtype, view):
    # np.flip along an axis of length 1 changes its stride but no element's address: exactly the
    # same elements in the same layout, so the spec's out=logits. It was refused as overlapping.
    logits = rng.standard_normal((1, 6)).astype(dtype)
    target = np.array([4])
    expected = xentc.cross_entropy_with_grad(logits, target)[1]
    work = logits.copy()
    if view == "flipped-row-axis":
        out = np.flip(work, axis=0)
    else:
        out = np.lib.stride_tricks.as_strided(
            work, strides=(12345 * work.itemsize, work.strides[1])
        )
    assert out.strides != work.strides
    _, grad = xentc.cross_entropy_with_grad(work, target, out=out)
    np.testing.assert_array_equal(work, expected)
    assert np.shares_memory(grad, work)
    # a real overlap in another layout is still refused
    with pytest.raises(ValueError, match="out"):
        xentc.cross_entropy_with_grad(work, target, out=work[:, ::-1])


def _misaligned(values):
    """`values` copied into memory one byte off its dtype's alignment, C-contiguous."""
    values = np.asarray(values)
    buf = np.zeros(values.nbytes + values.itemsize, dtype=np.uint8)
    out = np.ndarray(values.shape, values.dtype, buffer=buf, offset=1)
    out[...] = values
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


@pytest.mark.parametrize("shape", [(1,), (3, 1), (4, 6)], ids=str)
def test_misaligned_contiguous_inputs_reach_the_kernels_aligned(rng, dtype, shape):
    # np.ascontiguousarray returns a misaligned array that is already C-contiguous unchanged, so
    # such logits (and weights, targets, grad_output) reached the C kernels misaligned: UBSan's
    # "load of misaligned address" under the sanitizer build (xc_api.h promises aligned data).
    from xentc import _validate

    logits = rng.standard_normal(shape).astype(dtype)
    lead = shape[:-1]
    c = shape[-1]
    target = rng.integers(0, c, size=lead)
    weight = rng.uniform(0.5, 2.0, c).astype(dtype)
    sample_weight = rng.uniform(0.5, 2.0, lead)
    kw = {"weight": weight, "sample_weight": sample_weight, "reduction": "none"}
    bad = {
        "weight": _misaligned(weight),
        "sample_weight": _misaligned(sample_weight),
        "reduction": "none",
    }
    plan = _validate.plan_cross_entropy(
        _misaligned(logits),
        _misaligned(target),
        bad["weight"],
        bad["sample_weight"],
        -100,
        "none",
        0.0,
        0.0,
        1,
    )
    for name in ("target_index", "class_weight", "sample_weight"):
        assert getattr(plan, name).flags.aligned, f"{name} handed to the kernel misaligned"
    assert plan.logits.array.flags.aligned, "logits handed to the kernel misaligned"
    if lead:
        _, rows = _validate.check_grad_output(_misaligned(sample_weight), "none", lead)
        assert rows.flags.aligned, "grad_output handed to the kernel misaligned"
    probs = _validate.plan_cross_entropy(
        logits, _misaligned(np.full(shape, 1.0 / c, dtype)), None, None, -100, "none", 0.0, 0.0, 1
    ).target_prob
    assert probs.array.flags.aligned, "probabilities handed to the kernel misaligned"
    for fn in (xentc.logsumexp, xentc.softmax, xentc.log_softmax):
        assert _validate.plan_rows(_misaligned(logits), -1)[1].flags.aligned
        np.testing.assert_array_equal(fn(_misaligned(logits)), fn(logits))
    want = xentc.cross_entropy_with_grad(logits, target, grad_output=sample_weight, **kw)
    got = xentc.cross_entropy_with_grad(
        _misaligned(logits), _misaligned(target), grad_output=_misaligned(sample_weight), **bad
    )
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
