"""softcap and logit_scale (issue 6): z' = logit_scale * z, then z'' = softcap * tanh(z' / softcap)
(Gemma 2's logit soft-cap); the loss, lse and softmax are those of z'', the gradient goes back
through the transform.

Against the float64 reference (tests/reference.py, which transforms each row in float64 and
applies the chain rule as 4 e / (1 + e)^2), on the instruction set in use, for every row path of
the kernels: short rows (C=10, xent_short_group), ordinary rows (xent_row), few long rows
(N=2, C=256000 with 2 threads: xent_split); every layout; the options combined; NaN and inf
rows; bitwise across n_threads; against torch autograd; through xentc.dask.
"""

import math

import numpy as np
import pytest
import scipy.special
from conftest import TOL
from reference import check_grad, check_loss, ref_cross_entropy, ref_grad, unit_grad_scale
from strategies import with_layout

import xentc

TRANSFORMS = {
    "cap30": {"softcap": 30.0},
    "scale0.5": {"logit_scale": 0.5},
    "cap10-scale2": {"softcap": 10.0, "logit_scale": 2.0},
}
LAYOUTS = ["C", "F", "every-other-col", "3d-moved", "out=logits"]
SHAPES = [(37, 10), (16, 1000)]


def make_case(shape, dtype, options, seed):
    """(logits, target, kwargs): index targets with ignored rows, or probabilities."""
    rng = np.random.default_rng(seed)
    n, c = shape
    logits = (4 * rng.standard_normal((n, c))).astype(dtype)
    kw = {"reduction": "mean"}
    if options == "soft":
        target = scipy.special.softmax(rng.standard_normal((n, c)), axis=-1).astype(dtype)
        kw = {"reduction": "sum", "label_smoothing": 0.05, "weight": rng.uniform(0.5, 2, c)}
    else:
        target = rng.integers(0, c, n)
        target[::7] = -100
        if options == "all":
            kw = {
                "reduction": "none",
                "weight": rng.uniform(0.5, 2.0, c),
                "sample_weight": rng.uniform(0.0, 2.0, n),
                "label_smoothing": 0.1,
                "z_loss": 1e-3,
                "grad_output": rng.uniform(-2, 2, n),
            }
    return logits, target, kw


_REFERENCE = {}


def reference(shape, dtype, options, transform, seed):
    key = (shape, np.dtype(dtype).name, options, transform, seed)
    if key not in _REFERENCE:
        logits, target, kw = make_case(shape, dtype, options, seed)
        kw = dict(kw, **TRANSFORMS[transform])
        grad_output = kw.pop("grad_output", None)
        loss, lse = ref_cross_entropy(logits, target, **kw)
        grad = ref_grad(logits, target, **kw, grad_output=grad_output)
        scale = unit_grad_scale(logits, target, kw, grad_output, lse)
        _REFERENCE[key] = (loss, lse, grad, scale / max(1.0, abs(kw.get("logit_scale", 1.0))))
    return _REFERENCE[key]


def describe(shape, dtype, options, transform, layout):
    return (
        f"shape={shape} dtype={np.dtype(dtype).name} options={options} "
        f"transform={TRANSFORMS[transform]} layout={layout} isa={xentc._kernels.isa_active()}"
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("options", ["plain", "all", "soft"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-C{s[1]}")
def test_matches_reference(shape, options, transform, layout, dtype):
    seed = 100 + SHAPES.index(shape)
    logits, target, kw = make_case(shape, dtype, options, seed)
    ref_loss, ref_lse, ref_g, scale = reference(shape, dtype, options, transform, seed)
    msg = describe(shape, dtype, options, transform, layout)
    kw = dict(kw, **TRANSFORMS[transform])
    reduction = kw.get("reduction", "mean")

    if layout == "3d-moved":
        # Two copies of the rows in a (2, N, C) view of a (C, N, 2) buffer, classes moved last
        # and the leading axes swapped: no single row step describes it (row offsets).
        n, c = shape
        buf = np.empty((c, n, 2), dtype)
        buf[:, :, 0] = buf[:, :, 1] = logits.T
        x = np.moveaxis(buf, 0, -1).transpose(1, 0, 2)
        assert xentc._validate.as_matrix(x).row_offsets is not None, "test setup: row offsets"
        loss, lse, grad = xentc.cross_entropy_with_grad(
            x,
            np.stack([target, target]),
            return_lse=True,
            **{
                k: (np.stack([v, v]) if k in ("sample_weight", "grad_output") else v)
                for k, v in kw.items()
            },
        )
        for both in (loss, lse, grad) if reduction == "none" else (lse, grad):
            np.testing.assert_array_equal(both[0], both[1], err_msg=f"the two copies; {msg}")
        loss = {"none": lambda: loss[0], "sum": lambda: loss / 2, "mean": lambda: loss}[reduction]()
        lse, grad = lse[0], grad[0] * (2 if reduction == "mean" else 1)
    else:
        x = with_layout(logits, "C" if layout == "out=logits" else layout)
        out = x if layout == "out=logits" else None
        loss, lse, grad = xentc.cross_entropy_with_grad(x, target, return_lse=True, out=out, **kw)
        if out is not None:
            assert np.shares_memory(grad, x), f"out=logits not used; {msg}"
    check_loss(loss, ref_loss, dtype, msg, reduction=reduction)
    np.testing.assert_allclose(
        lse,
        ref_lse,
        rtol=TOL[np.dtype(dtype)]["rtol"],
        atol=TOL[np.dtype(dtype)]["atol"],
        err_msg=f"lse: {msg}",
    )
    check_grad(grad, ref_g, dtype, scale, msg)
    # the loss alone (no gradient pass) agrees bit for bit with the fused call's
    kw.pop("grad_output", None)
    alone = xentc.cross_entropy(logits, target, **kw)
    np.testing.assert_array_equal(
        alone,
        xentc.cross_entropy_with_grad(logits, target, **kw)[0],
        err_msg=f"cross_entropy vs _with_grad; {msg}",
    )


_SPLIT = {}


@pytest.mark.parametrize("options", ["smoothed", "soft"])
def test_few_long_rows_split_path(options, dtype):
    # N=2, C=256000 with 2 threads: the rows are cut into chunks shared by the threads
    # (xent_split); every chunk goes through the transform on its own load and store.
    rng = np.random.default_rng(5)
    n, c = 2, 256000
    logits = (6 * rng.standard_normal((n, c))).astype(dtype)
    if options == "soft":
        target = scipy.special.softmax(rng.standard_normal((n, c)), axis=-1)
        kw = {"softcap": 15.0, "logit_scale": 1.5, "reduction": "sum"}
    else:
        target = np.array([3, c - 1])
        kw = {
            "softcap": 30.0,
            "label_smoothing": 0.1,
            "weight": rng.uniform(0.5, 2, c),
            "reduction": "mean",
            "z_loss": 1e-4,
        }
    key = (np.dtype(dtype).name, options)
    if key not in _SPLIT:
        ref_loss, ref_lse = ref_cross_entropy(logits, target, **kw)
        _SPLIT[key] = (
            ref_loss,
            ref_lse,
            ref_grad(logits, target, **kw),
            unit_grad_scale(logits, target, kw, None, ref_lse) / 1.5,
        )
    ref_loss, ref_lse, ref_g, scale = _SPLIT[key]
    msg = f"N=2 C=256000 {options} {kw.keys()} dtype={np.dtype(dtype).name}"
    results = [
        xentc.cross_entropy_with_grad(logits, target, return_lse=True, n_threads=t, **kw)
        for t in (1, 2, 3)
    ]
    loss, lse, grad = results[1]
    check_loss(loss, ref_loss, dtype, msg, reduction=kw["reduction"])
    np.testing.assert_allclose(lse, ref_lse, rtol=TOL[np.dtype(dtype)]["rtol"], err_msg=msg)
    check_grad(grad, ref_g, dtype, scale, msg)
    for t, other in zip((1, 3), (results[0], results[2])):
        for a, b, what in zip(other, results[1], ("loss", "lse", "grad")):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: n_threads={t} vs 2; {msg}")


@pytest.mark.parametrize(
    "shape", [(300, 10), (64, 3000), (3, 70000)], ids=lambda s: f"N{s[0]}-C{s[1]}"
)
def test_bitwise_across_threads(shape, dtype, rng):
    n, c = shape
    logits = (5 * rng.standard_normal(shape)).astype(dtype)
    target = rng.integers(0, c, n)
    kw = {"softcap": 20.0, "logit_scale": 0.8, "label_smoothing": 0.05, "reduction": "none"}
    results = [
        xentc.cross_entropy_with_grad(
            np.asfortranarray(logits), target, n_threads=t, return_lse=True, **kw
        )
        for t in (1, 2, 3)
    ]
    for t, other in zip((2, 3), results[1:]):
        for a, b, what in zip(other, results[0], ("loss", "lse", "grad")):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: n_threads={t} vs 1, {shape}")


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("c", [10, 1000])
def test_nan_and_inf_rows(transform, c, dtype):
    # Rows with NaN, +inf, -inf (masked classes), all -inf, counted and ignored: as the
    # reference (a softcap maps +-inf to +-softcap, so such rows become finite; NaN stays NaN;
    # an ignored row's gradient is exactly 0 whatever it holds).
    rng = np.random.default_rng(c)
    logits = rng.standard_normal((8, c)).astype(dtype)
    logits[0, 3] = np.nan
    logits[1, 2] = np.inf
    logits[2, : c // 2] = -np.inf
    logits[3, :] = -np.inf
    logits[4, 5] = np.nan
    logits[5, [1, 4]] = [np.inf, -np.inf]
    target = np.array([0, 1, c - 1, 0, -100, 1, 2, 3])
    kw = TRANSFORMS[transform]
    ref_loss, ref_lse = ref_cross_entropy(logits, target, reduction="none", **kw)
    ref_g = ref_grad(logits, target, reduction="none", **kw)
    msg = f"non-finite rows C={c} {kw} dtype={np.dtype(dtype).name}"
    with np.errstate(invalid="ignore"):
        loss, lse, grad = xentc.cross_entropy_with_grad(
            logits, target, reduction="none", return_lse=True, **kw
        )
    check_loss(loss, ref_loss, dtype, msg, reduction="none")
    np.testing.assert_allclose(
        lse, ref_lse, rtol=TOL[np.dtype(dtype)]["rtol"], equal_nan=True, err_msg=f"lse: {msg}"
    )
    check_grad(grad, ref_g, dtype, 1.0, msg)
    assert not np.any(grad[4]), f"ignored NaN row: gradient must be exactly 0; {msg}"


def test_no_transform_is_the_plain_path(dtype, rng):
    logits = (3 * rng.standard_normal((50, 300))).astype(dtype)
    target = rng.integers(0, 300, 50)
    plain = xentc.cross_entropy_with_grad(logits, target, reduction="none")
    same = xentc.cross_entropy_with_grad(
        logits, target, reduction="none", softcap=None, logit_scale=1
    )
    for a, b in zip(plain, same):
        np.testing.assert_array_equal(a, b)


def test_logit_scale_zero(dtype, rng):
    # logit_scale 0 is allowed: every row is uniform (loss log C) and the gradient is 0.
    logits = rng.standard_normal((6, 50)).astype(dtype)
    loss, grad = xentc.cross_entropy_with_grad(logits, rng.integers(0, 50, 6), logit_scale=0.0)
    assert math.isclose(loss, math.log(50), rel_tol=1e-6)
    assert not np.any(grad)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_matches_torch_autograd(transform, target_kind, dtype, rng):
    torch = pytest.importorskip("torch", reason="torch is the oracle of this test")
    import torch.nn.functional as F

    n, c = 24, 500
    logits = (5 * rng.standard_normal((n, c))).astype(dtype)
    weight = rng.uniform(0.5, 2, c)
    if target_kind == "index":
        target = rng.integers(0, c, n)
        target[::5] = -100
        torch_target = torch.from_numpy(target)
    else:
        target = scipy.special.softmax(rng.standard_normal((n, c)), axis=-1)
        torch_target = torch.from_numpy(target)
    kw = TRANSFORMS[transform]
    cap, scale = kw.get("softcap"), kw.get("logit_scale", 1.0)
    z = torch.tensor(logits.astype(np.float64), requires_grad=True)
    zz = z * scale
    if cap is not None:
        zz = cap * torch.tanh(zz / cap)
    want = F.cross_entropy(zz, torch_target, weight=torch.from_numpy(weight), label_smoothing=0.1)
    want.backward()
    loss, grad = xentc.cross_entropy_with_grad(
        logits, target, weight=weight, label_smoothing=0.1, **kw
    )
    rtol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    msg = f"vs torch: {target_kind} {kw} dtype={np.dtype(dtype).name}"
    assert math.isclose(loss, want.item(), rel_tol=rtol), f"loss {loss} vs {want.item()}; {msg}"
    np.testing.assert_allclose(
        grad, z.grad.numpy(), rtol=0, atol=TOL[np.dtype(dtype)]["grad_atol"], err_msg=msg
    )


@pytest.mark.parametrize(
    "value, error",
    [
        (0.0, ValueError),
        (-1.0, ValueError),
        (np.inf, ValueError),
        (np.nan, ValueError),
        ("30", TypeError),
        (True, TypeError),
        (1 + 2j, TypeError),
    ],
)
def test_softcap_is_checked(value, error):
    logits = np.zeros((2, 3), np.float32)
    for fn in (xentc.cross_entropy, xentc.cross_entropy_with_grad):
        with pytest.raises(error, match="softcap"):
            fn(logits, [0, 1], softcap=value)


@pytest.mark.parametrize(
    "value, error",
    [
        (np.inf, ValueError),
        (-np.inf, ValueError),
        (np.nan, ValueError),
        (None, TypeError),
        ("1", TypeError),
        (np.complex128(1), TypeError),
    ],
)
def test_logit_scale_is_checked(value, error):
    logits = np.zeros((2, 3), np.float32)
    out = np.full_like(logits, 7.0)
    for fn in (xentc.cross_entropy, xentc.cross_entropy_with_grad):
        with pytest.raises(error, match="logit_scale"):
            fn(logits, [0, 1], logit_scale=value, **({"out": out} if "grad" in fn.__name__ else {}))
    assert np.all(out == 7.0), "out= written before the checks passed"


def test_dask_rows_pass_the_transform_through(dtype, rng):
    da = pytest.importorskip("dask.array", reason="xentc.dask needs dask")
    import xentc.dask

    logits = (4 * rng.standard_normal((40, 300))).astype(dtype)
    target = rng.integers(0, 300, 40)
    kw = {"softcap": 12.0, "logit_scale": 1.3, "reduction": "none"}
    want = xentc.cross_entropy_with_grad(logits, target, return_lse=True, **kw)
    got = xentc.dask.cross_entropy_with_grad(
        da.from_array(logits, chunks=(16, -1)), target, return_lse=True, **kw
    )
    for a, b, what in zip(got, want, ("loss", "lse", "grad")):
        np.testing.assert_array_equal(a.compute(), b, err_msg=f"dask {what}")
    loss = xentc.dask.cross_entropy(
        da.from_array(logits, chunks=(16, -1)), target, softcap=12.0, logit_scale=1.3
    ).compute()
    assert math.isclose(
        loss, xentc.cross_entropy(logits, target, softcap=12.0, logit_scale=1.3), rel_tol=1e-12
    )
    with pytest.raises(NotImplementedError, match="softcap"):
        xentc.dask.cross_entropy(da.from_array(logits, chunks=(16, 100)), target, softcap=12.0)
    with pytest.raises(ValueError, match="softcap"):
        xentc.dask.cross_entropy(da.from_array(logits, chunks=(16, -1)), target, softcap=-1.0)


@pytest.mark.parametrize("out_kind", ["shifted", "in-place"])
@pytest.mark.parametrize("shape", [(67, 32771), (2, 1100003)], ids=["rows", "split-rows"])
def test_streamed_gradient(shape, out_kind, rng):
    # A float32 gradient of 8 MiB or more into the caller's memory goes out with streaming stores
    # (xent_row through its stored-terms row, xent_split through its g row): the transform's
    # chain rule is applied before, and the bits are those of calls small enough not to stream.
    logits = (4 * rng.standard_normal(shape)).astype(np.float32)
    target = rng.integers(0, shape[1], shape[0])
    kw = {"softcap": 20.0, "logit_scale": 0.8, "reduction": "sum", "label_smoothing": 0.05}
    assert logits.nbytes >= 8 << 20, "test setup: the gradient must be streamed"
    expected = np.empty_like(logits)
    step = 1 if shape[0] == 2 else 4
    for start in range(0, shape[0], step):
        rows = slice(start, start + step)
        xentc.cross_entropy_with_grad(logits[rows], target[rows], out=expected[rows], **kw)
    if out_kind == "shifted":  # rows start one element past a vector boundary
        out = np.full((shape[0], shape[1] + 1), np.nan, np.float32)[:, 1:]
        source = logits
    else:
        out = source = logits.copy()
    _, grad = xentc.cross_entropy_with_grad(source, target, out=out, **kw)
    assert np.shares_memory(grad, out)
    np.testing.assert_array_equal(grad, expected, err_msg=f"streamed {shape} out={out_kind}")
