"""float16 and bfloat16 logits (issue 6; supersedes the spec's "float16 logits are a TypeError").

The float32 kernel runs on them, converting each row to float32 as it loads it; the gradient is
computed in float32 and rounded to the logits' dtype (to nearest even) as it is stored. Losses
('none') and lse come back float32: float32 accumulations, which a 16-bit result would round.
Compared here with the float64 reference (tests/reference.py) on the 16-bit inputs widened
exactly: the loss and lse within the float32 tolerance, the gradient within one unit in the
last place of its dtype (the rounding of a float32 value that is itself within tolerance).
bfloat16 is ml_dtypes' (the test extra); xentc itself never imports ml_dtypes.
"""

import math

import numpy as np
import pytest
import scipy.special
from conftest import TOL
from reference import check_loss, ref_cross_entropy, ref_grad, unit_grad_scale
from strategies import strided_out, with_layout

import xentc

try:
    import ml_dtypes
except ImportError:  # the bfloat16 cases skip
    ml_dtypes = None

F32 = np.dtype(np.float32)


def _half_dtypes():
    yield pytest.param(np.dtype(np.float16), id="f16")
    marks = [] if ml_dtypes else [pytest.mark.skip(reason="ml_dtypes (test extra) gives bfloat16")]
    yield pytest.param(np.dtype(ml_dtypes.bfloat16) if ml_dtypes else None, id="bf16", marks=marks)


@pytest.fixture(params=list(_half_dtypes()))
def half(request):
    return request.param


def widen(x):
    """16-bit values as float64, exactly (bfloat16 goes through float32, as its casts do)."""
    return np.asarray(x).astype(np.float32).astype(np.float64)


def ulp(values, dtype):
    """One unit in the last place of `dtype` at |values| (float64 values)."""
    mag = np.abs(np.asarray(values, np.float64))
    mag = np.where(np.isfinite(mag), mag, 0.0)  # the callers compare finite values only
    if dtype == np.float16:
        return np.spacing(mag.astype(np.float16)).astype(np.float64)
    # bfloat16: float32's exponent range, 8 significant bits
    return np.spacing(mag.astype(np.float32)).astype(np.float64) * 65536.0


def check_half_grad(grad, expected, dtype, scale, msg):
    """grad (of `dtype`) within one ulp of `dtype` plus the float32 tolerance of the reference;
    NaN exactly where the reference has NaN."""
    assert grad.dtype == dtype, f"grad dtype {grad.dtype}; {msg}"
    assert grad.shape == expected.shape, f"grad shape {grad.shape}; {msg}"
    got = widen(grad)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"grad NaN pattern; {msg}")
    err = np.abs(got - expected)[~nan]
    bound = (ulp(expected, dtype) + TOL[F32]["grad_atol"] / scale)[~nan]
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert np.all(err <= bound), (
        f"grad: error {err[worst]:.3g} > {bound[worst]:.3g} at {worst}; {msg}"
    )


def make_case(rng, shape, dtype, options):
    n, c = shape
    logits = (3 * rng.standard_normal((n, c))).astype(np.float32).astype(dtype)
    kw = {"reduction": "mean"}
    if options == "soft":
        target = scipy.special.softmax(rng.standard_normal((n, c)), axis=-1)
        kw = {"reduction": "sum", "label_smoothing": 0.05}
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
                "softcap": 30.0,
            }
    return logits, target, kw


LAYOUTS = ["C", "F", "every-other-col", "out=logits", "out-strided"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("options", ["plain", "all", "soft"])
@pytest.mark.parametrize("shape", [(37, 10), (16, 1000)], ids=lambda s: f"N{s[0]}-C{s[1]}")
def test_matches_reference(shape, options, layout, half, rng):
    logits, target, kw = make_case(rng, shape, half, options)
    grad_output = kw.pop("grad_output", None)
    ref_loss, ref_lse = ref_cross_entropy(logits, target, **kw)
    expected = ref_grad(logits, target, **kw, grad_output=grad_output)
    scale = unit_grad_scale(widen(logits), target, kw, grad_output, ref_lse)
    msg = (
        f"shape={shape} dtype={half} options={options} layout={layout} "
        f"isa={xentc._kernels.isa_active()}"
    )

    x, out = logits, None
    if layout in ("F", "every-other-col"):
        x = with_layout(logits, layout)
    elif layout == "out=logits":
        x = out = logits.copy()
    elif layout == "out-strided":
        out, untouched = strided_out(shape, half)
    loss, lse, grad = xentc.cross_entropy_with_grad(
        x, target, grad_output=grad_output, out=out, return_lse=True, **kw
    )
    check_loss(loss, ref_loss, F32, msg, reduction=kw["reduction"])  # float32 rows
    assert lse.dtype == F32, f"lse dtype {lse.dtype}; {msg}"
    np.testing.assert_allclose(
        lse, ref_lse, rtol=TOL[F32]["rtol"], atol=TOL[F32]["atol"], err_msg=f"lse: {msg}"
    )
    check_half_grad(grad, expected, half, scale, msg)
    if out is not None:
        assert np.shares_memory(grad, out), f"out= not used; {msg}"
    if layout == "out-strided":
        assert untouched(), f"out=: wrote outside its view; {msg}"
    # the loss alone gives the same bits as the fused call
    alone = xentc.cross_entropy(logits, target, **kw)
    fused = xentc.cross_entropy_with_grad(logits, target, **kw)[0]
    np.testing.assert_array_equal(alone, fused, err_msg=f"cross_entropy vs _with_grad; {msg}")


def test_same_as_float32_kernel_on_widened_logits(half, rng):
    # The 16-bit path is the float32 kernel on exactly widened rows: its loss and lse are those
    # bits, and its gradient is the float32 gradient rounded to nearest even.
    logits = (4 * rng.standard_normal((50, 700))).astype(np.float32).astype(half)
    target = rng.integers(0, 700, 50)
    kw = {"reduction": "none", "return_lse": True, "label_smoothing": 0.1, "softcap": 25.0}
    loss, lse, grad = xentc.cross_entropy_with_grad(logits, target, **kw)
    loss32, lse32, grad32 = xentc.cross_entropy_with_grad(logits.astype(np.float32), target, **kw)
    np.testing.assert_array_equal(loss, loss32)
    np.testing.assert_array_equal(lse, lse32)
    np.testing.assert_array_equal(widen(grad), widen(grad32.astype(half)))


@pytest.mark.parametrize(
    "shape", [(300, 10), (64, 3000), (2, 256000)], ids=lambda s: f"N{s[0]}-C{s[1]}"
)
def test_bitwise_across_threads(shape, half, rng):
    logits = (3 * rng.standard_normal(shape)).astype(np.float32).astype(half)
    target = rng.integers(0, shape[1], shape[0])
    runs = [
        xentc.cross_entropy_with_grad(
            logits, target, reduction="none", return_lse=True, n_threads=t
        )
        for t in (1, 2, 3)
    ]
    for t, other in zip((2, 3), runs[1:]):
        for a, b, what in zip(other, runs[0], ("loss", "lse", "grad")):
            np.testing.assert_array_equal(
                widen(a), widen(b), err_msg=f"{what}: n_threads={t} vs 1, {shape} {half}"
            )


_LONG = {}


def test_few_long_rows(half, rng):
    # N=2, C=256000 with 2 threads: xent_split converts and stores chunk by chunk.
    key = half.name
    if key not in _LONG:
        logits = (3 * np.random.default_rng(9).standard_normal((2, 256000))).astype(half)
        target = np.array([5, 255999])
        ref_loss, ref_lse = ref_cross_entropy(logits, target, reduction="sum")
        _LONG[key] = (logits, target, ref_loss, ref_lse, ref_grad(logits, target, reduction="sum"))
    logits, target, ref_loss, ref_lse, expected = _LONG[key]
    loss, lse, grad = xentc.cross_entropy_with_grad(
        logits, target, reduction="sum", return_lse=True, n_threads=2
    )
    msg = f"(2, 256000) {half} isa={xentc._kernels.isa_active()}"
    check_loss(loss, ref_loss, F32, msg, reduction="sum")
    np.testing.assert_allclose(lse, ref_lse, rtol=TOL[F32]["rtol"], err_msg=msg)
    check_half_grad(grad, expected, half, 1.0, msg)


def test_nan_and_inf(half):
    c = 40
    logits = np.zeros((5, c), np.float32)
    logits[0, 3] = np.nan
    logits[1, 2] = np.inf
    logits[2, : c // 2] = -np.inf
    logits[3, 7] = 70000.0  # beyond float16's range: inf as float16, finite as bfloat16
    with np.errstate(over="ignore"):
        logits = logits.astype(half)
    target = np.array([0, 1, c - 1, 7, -100])
    logits[4, 0] = np.nan
    with np.errstate(invalid="ignore"):
        loss, lse, grad = xentc.cross_entropy_with_grad(
            logits, target, reduction="none", return_lse=True
        )
    ref_loss, ref_lse = ref_cross_entropy(logits, target, reduction="none")
    expected = ref_grad(logits, target, reduction="none")
    check_loss(loss, ref_loss, F32, f"non-finite {half}", reduction="none")
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, equal_nan=True)
    check_half_grad(grad, expected, half, 1.0, f"non-finite {half}")
    assert np.all(np.isnan(widen(grad[0]))), "a NaN row's gradient is NaN, also in 16 bits"
    assert not np.any(widen(grad[4])), "an ignored row's gradient is exactly 0"


def test_out_must_have_the_half_dtype(half, rng):
    logits = rng.standard_normal((4, 9)).astype(np.float32).astype(half)
    out = np.zeros((4, 9), np.float32)
    with pytest.raises(ValueError, match="out"):
        xentc.cross_entropy_with_grad(logits, [0, 1, 2, 3], out=out)
    assert not np.any(out)


def test_half_probability_targets_are_rejected(half):
    logits = np.zeros((2, 3), half)
    for bad in (np.full((2, 3), 1 / 3, np.float16),) + (
        (np.full((2, 3), 1 / 3, np.float32).astype(ml_dtypes.bfloat16),) if ml_dtypes else ()
    ):
        with pytest.raises(TypeError, match="target"):
            xentc.cross_entropy(logits, bad)


def test_half_weights_work_as_float32(half, rng):
    # class weights (any float dtype, as before) are read in float32 for 16-bit logits
    logits = rng.standard_normal((6, 5)).astype(np.float32).astype(half)
    target = rng.integers(0, 5, 6)
    w = rng.uniform(0.5, 2, 5)
    got = xentc.cross_entropy(logits, target, weight=w)
    want = xentc.cross_entropy(logits.astype(np.float32), target, weight=w.astype(np.float32))
    assert got == want


@pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax"])
def test_array_functions_upcast_to_float32(name, half, rng):
    x = (3 * rng.standard_normal((7, 33))).astype(np.float32).astype(half)
    fn = getattr(xentc, name)
    got = fn(x, axis=0)
    assert got.dtype == F32, f"{name} of {half} returns {got.dtype}"
    np.testing.assert_array_equal(got, fn(x.astype(np.float32), axis=0))


def test_shards_reject_half_logits(half):
    logits = np.zeros((2, 4), half)
    with pytest.raises(TypeError, match="logits_block"):
        xentc.shard_stats(logits, np.array([0, 1]), class_offset=0, n_classes=4)


def test_dask_rows(half, rng):
    da = pytest.importorskip("dask.array", reason="xentc.dask needs dask")
    import xentc.dask

    logits = (3 * rng.standard_normal((40, 200))).astype(np.float32).astype(half)
    target = rng.integers(0, 200, 40)
    want = xentc.cross_entropy_with_grad(logits, target, reduction="none", return_lse=True)
    got = xentc.dask.cross_entropy_with_grad(
        da.from_array(logits, chunks=(16, -1)), target, reduction="none", return_lse=True
    )
    for a, b, what in zip(got, want, ("loss", "lse", "grad")):
        assert a.dtype == b.dtype, f"dask {what} dtype {a.dtype} vs {b.dtype}"
        np.testing.assert_array_equal(widen(a.compute()), widen(b), err_msg=f"dask {what}")
    mean = xentc.dask.cross_entropy(
        da.from_array(logits, chunks=(16, -1)), target, weight=rng.uniform(0.5, 2, 200)
    ).compute()
    assert math.isfinite(mean)
    with pytest.raises(NotImplementedError, match="dtype"):
        xentc.dask.cross_entropy(da.from_array(logits, chunks=(16, 100)), target)
