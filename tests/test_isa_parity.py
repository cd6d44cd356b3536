"""Instruction-set parity, in one place: every kernel set this CPU runs (baseline, avx2, avx512;
conftest.every_isa) against the float64 reference (tests/reference.py) and against the baseline
kernels, over each algorithm the dispatcher can choose (short-row tiles, whole rows, few long
rows split over threads, streamed gradients, the backward mode, the softmax family, the shards),
each dtype and the options that change a kernel's arithmetic.

The rest of the suite runs on the set chosen at import (the best this CPU has). So a set's own
bug shows here: as a result outside the tolerance of the reference, as a difference from the
baseline beyond it, or as results that change with the thread count (bitwise, per set: the
spec's rule). The math helpers' accuracy per set (exp, log, tanh, the 16-bit round trips) is
here too.
"""

import math

import numpy as np
import pytest
from conftest import TOL
from hypothesis import given
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
from strategies import SWEEP, check_with_grad_case, xent_cases

import xentc
from xentc import _kernels

pytestmark = pytest.mark.usefixtures("every_isa")

BASELINE = _kernels.isa_supported()[0]


def on_baseline(fn):
    """fn() run on the baseline kernels, then back on the set under test."""
    current = _kernels.isa_active()
    _kernels._use_isa(BASELINE)
    try:
        return fn()
    finally:
        _kernels._use_isa(current)


# ---- (a) a sweep of every option and layout against the reference ---------------------------


@SWEEP
@given(case=xent_cases(with_grad=True))
def test_sweep_matches_reference(case):
    check_with_grad_case(case, f"[{_kernels.isa_active()}] {case.describe()}")


# ---- (b) each algorithm, named ---------------------------------------------------------------

# (rows, classes) that steer the dispatcher (src_c/xc_xent.inc) to each algorithm
PATHS = {
    "short-tiles": (71, 10),  # C <= XC_SHORT_MAX: rows across SIMD lanes, two groups and a tail
    "short-limit": (40, 129),  # just past the short-row limit: whole rows
    "whole-rows": (24, 1000),
    "odd-rows": (9, 4099),  # rows of every alignment, partial vectors
    "split-row": (2, 70001),  # fewer rows than threads, rows longer than a chunk: split
}
OPTIONS = {
    "plain": {},
    "all-index": {
        "weight": "w",
        "sample_weight": "s",
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "ignore_index": 1,
    },
    "transform": {"softcap": 5.0, "logit_scale": 1.5},
    "probs": {"target": "prob", "label_smoothing": 0.05, "weight": "w"},
}
DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": "bfloat16"}


def _dtype(name):
    if name == "bf16":
        return np.dtype(pytest.importorskip("ml_dtypes", reason="ml_dtypes checks bf16").bfloat16)
    return np.dtype(DTYPES[name])


def _case(path, option, dtype, seed):
    rng = np.random.default_rng(seed)
    n, c = PATHS[path]
    logits = (3 * rng.standard_normal((n, c))).astype(dtype)
    opts = dict(OPTIONS[option])
    if opts.pop("target", "index") == "prob":
        target = rng.dirichlet(np.ones(c), size=n).astype(
            np.float32 if dtype.itemsize <= 4 else dtype
        )
    else:
        target = rng.integers(0, c, n)
        target[0] = opts.get("ignore_index", -100)
    kernel_dtype = np.float64 if dtype == np.float64 else np.float32
    if opts.get("weight") == "w":
        opts["weight"] = rng.uniform(0.5, 2.0, c).astype(kernel_dtype)
    if opts.get("sample_weight") == "s":
        opts["sample_weight"] = rng.uniform(0.0, 2.0, n)
    return logits, target, opts


def _run(logits, target, opts, n_threads):
    loss, lse, grad = xentc.cross_entropy_with_grad(
        logits, target, **opts, reduction="none", return_lse=True, n_threads=n_threads
    )
    return loss, lse, grad


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("path", list(PATHS))
def test_paths_match_reference_baseline_and_threads(path, option, dtype_name):
    dtype = _dtype(dtype_name)
    logits, target, opts = _case(path, option, dtype, seed=hash((path, option)) % 2**32)
    msg = f"[{_kernels.isa_active()}] {path} {option} {dtype}"
    loss, lse, grad = _run(logits, target, opts, 1)
    # bitwise the same for every thread count, on this set
    for n_threads in (2, 3):
        again = _run(logits, target, opts, n_threads)
        for what, a, b in zip(("loss", "lse", "grad"), (loss, lse, grad), again):
            assert np.array_equal(a, b, equal_nan=True), f"{what} with {n_threads} threads: {msg}"
    # against the reference, on the values the kernel saw (16-bit logits are widened exactly)
    wide = logits.astype(np.float64)
    ref_loss, ref_lse = ref_cross_entropy(wide, target, **opts, reduction="none")
    tol_dtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    check_loss(loss.astype(tol_dtype), ref_loss, tol_dtype, msg, reduction="none")
    np.testing.assert_allclose(lse.astype(np.float64), ref_lse, rtol=TOL[tol_dtype]["rtol"] * 4)
    if dtype.itemsize > 2:  # a 16-bit gradient is rounded to 16 bits: test_half bounds it
        expected = ref_grad(wide, target, **opts, reduction="none")
        scale = unit_grad_scale(wide, target, {**opts, "reduction": "none"}, None, ref_lse)
        check_grad(grad, expected, dtype, scale, msg)
    # against the baseline kernels
    base = on_baseline(lambda: _run(logits, target, opts, 2))
    tol = TOL[tol_dtype]
    np.testing.assert_allclose(loss, base[0], rtol=tol["rtol"], atol=tol["atol"], err_msg=msg)
    np.testing.assert_allclose(lse, base[1], rtol=tol["rtol"], atol=tol["atol"], err_msg=msg)
    gap = np.abs(grad.astype(np.float64) - base[2].astype(np.float64)).max()
    assert gap <= (1e-2 if dtype.itemsize == 2 else 10 * tol["grad_atol"]), f"grad gap {gap}: {msg}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_streamed_gradient_matches_ordinary_stores(dtype):
    # a gradient of 8 MiB or more is written with streaming stores (xc_rows.h); its bits must
    # be those of the same rows computed a few at a time (ordinary stores)
    rng = np.random.default_rng(5)
    c = 32771
    n = (8 << 20) // (c * np.dtype(dtype).itemsize) + 3
    logits = (2 * rng.standard_normal((n, c))).astype(dtype)
    target = rng.integers(0, c, n)
    _, big = xentc.cross_entropy_with_grad(logits, target, reduction="sum")
    small = np.empty_like(logits)
    for start in range(0, n, 4):
        rows = slice(start, start + 4)
        xentc.cross_entropy_with_grad(logits[rows], target[rows], reduction="sum", out=small[rows])
    assert np.array_equal(big, small), f"[{_kernels.isa_active()}] streamed gradient differs"


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_backward_mode(path, dtype):
    logits, target, opts = _case(path, "all-index", np.dtype(dtype), seed=17)
    _, lse = xentc.cross_entropy(logits, target, **opts, return_lse=True, lse_dtype=np.float64)
    grad = xentc.cross_entropy_grad(logits, target, lse, **opts, n_threads=1)
    assert np.array_equal(grad, xentc.cross_entropy_grad(logits, target, lse, **opts, n_threads=3))
    _, fused = xentc.cross_entropy_with_grad(logits, target, **opts)
    tol = TOL[np.dtype(dtype)]["grad_atol"]
    scale = len(target)  # the 'mean' gradient brought to a unit-size loss
    assert np.abs((grad - fused) * scale).max() <= 4 * tol, f"[{_kernels.isa_active()}] {path}"


@pytest.mark.parametrize("fn", ["logsumexp", "softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(71, 10), (9, 4099), (2, 70001)], ids=["short", "odd", "long"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_family(fn, shape, dtype):
    x = (3 * np.random.default_rng(3).standard_normal(shape)).astype(dtype)
    x[0, :3] = -np.inf  # masked classes
    ref = {"logsumexp": ref_logsumexp, "softmax": ref_softmax, "log_softmax": ref_log_softmax}[fn]
    got = getattr(xentc, fn)(x, axis=-1)
    tol = TOL[np.dtype(dtype)]
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(
            got.astype(np.float64),
            ref(x.astype(np.float64), axis=-1),
            rtol=4 * tol["rtol"],
            atol=tol["atol"],
            equal_nan=True,
            err_msg=f"[{_kernels.isa_active()}] {fn} {shape}",
        )


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_shards_match_whole_array(kind, dtype):
    option = "probs" if kind == "prob" else "plain"
    logits, target, opts = _case("whole-rows", option, np.dtype(dtype), 9)
    smoothing = opts.get("label_smoothing", 0.0)
    blocks = [(0, 300), (300, 1000)]

    def block_target(a, b):
        return target if kind == "index" else target[:, a:b]

    stats = [
        xentc.shard_stats(
            logits[:, a:b],
            block_target(a, b),
            class_offset=a,
            n_classes=1000,
            label_smoothing=smoothing,
            n_threads=2,
        )
        for a, b in blocks
    ]
    totals = xentc.combine_shards(stats)
    want = xentc.cross_entropy(logits, target, label_smoothing=smoothing)
    tol = TOL[np.dtype(dtype)]
    msg = f"[{_kernels.isa_active()}] {kind}"
    assert math.isclose(totals.loss, want, rel_tol=tol["rtol"]), msg
    grad = np.concatenate(
        [
            xentc.shard_grad(logits[:, a:b], block_target(a, b), totals, class_offset=a)
            for a, b in blocks
        ],
        axis=1,
    )
    _, fused = xentc.cross_entropy_with_grad(logits, target, label_smoothing=smoothing)
    assert np.abs((grad - fused) * len(logits)).max() <= 4 * tol["grad_atol"], msg


# ---- (c) the math helpers of each set (src_c/xc_math.h, xc_half.h) ---------------------------


@pytest.mark.parametrize(
    "dtype,lo,hi",
    # The normal-result domain documented in src_c/xc_math.h.
    [(np.float32, -87.33, 88.376), (np.float64, -708.39, 709.436)],
    ids=["f32", "f64"],
)
def test_exp_accuracy(dtype, lo, hi):
    x = np.random.default_rng(7).uniform(lo, hi, 10**6).astype(dtype)
    approx = _kernels._math("exp", x).astype(np.float64)
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(approx - exact) / np.spacing(exact.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 2.0, f"{np.dtype(dtype).name} exp: max error {ulps.max():.2f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_exp_special_values(dtype):
    x = np.array([0.0, -np.inf, np.inf, np.nan, -1e4, 1e4], dtype=dtype)
    got = _kernels._math("exp", x)
    np.testing.assert_array_equal(
        got,
        np.array([1.0, 0.0, np.inf, np.nan, 0.0, np.inf], dtype),
        err_msg=f"exp special values, {np.dtype(dtype).name}",
    )


@pytest.mark.parametrize("name,bound", [("log", 2.5), ("log1p", 4.5)])
def test_log_accuracy(name, bound):
    # xc_log / xc_log1p (double; the short-row kernel's loss) against long double: log over
    # [2^-20, 2^20] (a row's sum of exp is >= 1; below 1 for the bound's sake), log1p over
    # [0, 1] and tiny arguments (a confident row's log1p(s_other)).
    rng = np.random.default_rng(11)
    if name == "log":
        x = np.ldexp(rng.uniform(1, 2, 10**6), rng.integers(-20, 21, 10**6))
    else:
        half = 5 * 10**5
        x = np.concatenate(
            [rng.uniform(0, 1, half), np.ldexp(rng.uniform(1, 2, half), rng.integers(-60, 0, half))]
        )
    approx = _kernels._math(name, x)
    exact = getattr(np, name)(x.astype(np.longdouble))
    ulps = np.abs(approx - exact) / np.spacing(np.abs(exact).astype(np.float64))
    ulps = ulps[exact != 0].astype(np.float64)
    assert ulps.max() <= bound, f"{name}: max error {ulps.max():.2f} ulp (bound {bound})"
    # log(1) = log1p(0) = 0 exactly; log(2) = log1p(1) = ln 2; NaN stays NaN
    x = np.array([0.0, 1.0, np.nan]) + (name == "log")
    np.testing.assert_array_equal(
        _kernels._math(name, x), [0.0, np.log(2.0), np.nan], err_msg=f"{name} at {x}"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tanh_accuracy(dtype):
    # xc_tanhf / xc_tanh (the softcap) against long double: uniform over [-10, 10] (both of its
    # forms and the saturation), and log-spread magnitudes over [2^-30, 2^4] (the polynomial near
    # 0, where tanh(x) ~ x must keep every digit).
    rng = np.random.default_rng(13)
    half = 10**6
    x = np.concatenate(
        [
            rng.uniform(-10, 10, half),
            np.ldexp(rng.uniform(1, 2, half), rng.integers(-30, 4, half))
            * rng.choice([-1.0, 1.0], half),
        ]
    ).astype(dtype)
    approx = _kernels._math("tanh", x).astype(np.longdouble)
    exact = np.tanh(x.astype(np.longdouble))
    ulps = (np.abs(approx - exact) / np.spacing(np.abs(exact).astype(dtype))).astype(np.float64)
    assert ulps.max() <= 3.0, (
        f"{np.dtype(dtype).name} tanh: max error {ulps.max():.2f} ulp at x={x[np.argmax(ulps)]!r}"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tanh_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 1e-30], dtype=dtype)
    got = _kernels._math("tanh", x)
    np.testing.assert_array_equal(
        got,
        np.array([0.0, -0.0, 1.0, -1.0, np.nan, 1.0, -1.0, 1e-30], dtype),
        err_msg=f"tanh, {np.dtype(dtype).name}",
    )
    assert np.signbit(got[1]), "tanh(-0.0) must be -0.0"


def _half_inputs(rng):
    """float32 values for the 16-bit round trips: every float16 value (exact), the ties and
    near-ties between neighbouring float16 / bfloat16 values, subnormals, the overflow edge
    (65504, 65520), random bits of every exponent, inf and NaN (quiet and signalling)."""
    every_f16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    bits = rng.integers(0, 1 << 32, 10**6, dtype=np.uint64).astype(np.uint32)
    ties = (np.arange(1 << 16, dtype=np.uint32) << 16) | np.uint32(0x8000)  # bf16 ties
    f16_ties = every_f16[np.isfinite(every_f16)].astype(np.float32).view(np.uint32) + (1 << 12)
    edges = np.array(
        [
            65504,
            65519.996,
            65520,
            65536,
            2.0**-14,
            2.0**-24,
            2.0**-25,
            1.5 * 2.0**-25,
            3e-8,
            1e-45,
            np.inf,
            -np.inf,
        ],
        np.float32,
    )
    nans = np.array([0x7FC00000, 0x7F800001, 0xFFA00000, 0x7FBFFFFF], np.uint32).view(np.float32)
    return np.concatenate(
        [
            every_f16.astype(np.float32),
            bits.view(np.float32),
            ties.view(np.float32),
            f16_ties.view(np.float32),
            edges,
            nans,
        ]
    )


def _same_or_both_nan(got, want, what):
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: NaN where NaN")
    bad = np.flatnonzero(got[~nan].view(np.uint32) != want[~nan].view(np.uint32))
    assert bad.size == 0, (
        f"{what}: {bad.size} values differ, first "
        f"{got[~nan][bad[0]]!r} vs {want[~nan][bad[0]]!r} "
        f"(from {np.asarray(want)[~nan][bad[0]]!r})"
    )


def test_half_rounding():
    # src_c/xc_half.h, as the kernels load 16-bit logits and store 16-bit gradients: float16 as
    # NumPy rounds (to nearest even, subnormals, overflow to inf), bit for bit, under F16C and
    # the baseline's software alike; NaN stays NaN.
    x = _half_inputs(np.random.default_rng(17))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is the point
        want = x.astype(np.float16).astype(np.float32)
    _same_or_both_nan(_kernels._math("f16_round", x), want, "float16 round trip")


def test_bfloat16_rounding():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (the test extra) checks bf16")
    x = _half_inputs(np.random.default_rng(19))
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    _same_or_both_nan(_kernels._math("bf16_round", x), want, "bfloat16 round trip")
