"""The build: OpenMP as configured, show_config, the kernels' exp accuracy, the installed copy."""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import xentc
from xentc import _kernels


def test_tests_use_the_installed_package():
    # tests/ has no __init__.py and must not import the source tree (it has no built extension).
    repo = pathlib.Path(__file__).resolve().parents[1]
    assert repo / "xentc" != pathlib.Path(xentc.__file__).resolve().parent, (
        f"xentc imported from the source tree {xentc.__file__}; run pytest from outside it"
    )


@pytest.mark.skipif(os.environ.get("XENTC_NO_OPENMP") == "1", reason="serial build requested")
def test_openmp_enabled_when_ci_requires_it():
    if os.environ.get("XENTC_FAIL_NO_OPENMP") != "1":
        pytest.skip("XENTC_FAIL_NO_OPENMP is not set: a serial build is allowed here")
    assert _kernels.openmp_enabled(), "CI asked for OpenMP but the extension was built serially"


def test_version_is_the_installed_distributions():
    # pyproject.toml reads the version from xentc/__init__.py: one source for both.
    assert xentc.__version__ == importlib.metadata.version("xentc")


def test_build_record_describes_this_build():
    build = xentc._config.build_info()
    assert build, "no xentc/_build_info.py: setup.py's build_ext writes it into every build"
    assert build["version"] == xentc.__version__, f"record of another build: {build}"
    assert build["compiler"] != "unknown" and build["compiler_command"], build
    # One entry per kernel library, named as the dispatcher names its instruction sets.
    assert list(build["kernel_flags"]) == _kernels.isa_compiled(), build["kernel_flags"]
    assert (build["openmp"] == "on") == _kernels.openmp_enabled(), build["openmp"]


def test_build_never_targets_the_build_machine():
    # The wheel must run on every CPU of its platform: per-ISA flags, never -march=native.
    build = xentc._config.build_info()
    flags = [
        *build.get("compiler_command", "").split(),
        *build.get("extension_flags", []),
        *(flag for flags in build.get("kernel_flags", {}).values() for flag in flags),
    ]
    assert flags, "no build record"
    assert not [f for f in flags if f.endswith("=native")], f"targets the build machine: {flags}"


@pytest.mark.skipif(
    os.environ.get("XENTC_NO_OPENMP") != "1", reason="runs in the XENTC_NO_OPENMP=1 build only"
)
def test_no_openmp_switch_builds_serially():
    assert not _kernels.openmp_enabled()
    assert "XENTC_NO_OPENMP" in xentc._config.build_info()["openmp"]
    assert xentc._config.config()["openmp"].startswith("off: XENTC_NO_OPENMP=1")


def test_show_config_reports_version_build_and_threads(capsys):
    xentc.show_config()
    text = capsys.readouterr().out
    assert f"xentc:              {xentc.__version__}\n" in text, text
    keys = [
        "compiler:",
        "compile command:",
        "extension flags:",
        "kernel flags:",
        "openmp:",
        "default n_threads:",
        "kernels compiled:",
        "kernels in use:",
    ]
    if _kernels.openmp_enabled():
        keys.append("openmp runtime:")
    for key in keys:
        assert f"\n{key}" in text, f"show_config() lacks {key!r}:\n{text}"
    assert xentc._config.build_info()["compiler"] in text


def test_serial_build_reports_one_thread():
    config = xentc._config.config()
    if not _kernels.openmp_enabled():
        assert config["default n_threads"].startswith("1 ")


@pytest.mark.parametrize(
    "dtype,lo,hi",
    # The normal-result domain documented in src_c/xc_math.h.
    [(np.float32, -87.33, 88.376), (np.float64, -708.39, 709.436)],
    ids=["f32", "f64"],
)
@pytest.mark.usefixtures("every_isa")
def test_exp_accuracy(dtype, lo, hi):
    x = np.random.default_rng(7).uniform(lo, hi, 10**6).astype(dtype)
    approx = _kernels._math("exp", x).astype(np.float64)
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(approx - exact) / np.spacing(exact.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 2.0, f"{np.dtype(dtype).name} exp: max error {ulps.max():.2f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.usefixtures("every_isa")
def test_exp_special_values(dtype):
    x = np.array([0.0, -np.inf, np.inf, np.nan, -1e4, 1e4], dtype=dtype)
    got = _kernels._math("exp", x)
    np.testing.assert_array_equal(
        got,
        np.array([1.0, 0.0, np.inf, np.nan, 0.0, np.inf], dtype),
        err_msg=f"exp special values, {np.dtype(dtype).name}",
    )


@pytest.mark.parametrize("name,bound", [("log", 2.5), ("log1p", 4.5)])
@pytest.mark.usefixtures("every_isa")
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
@pytest.mark.usefixtures("every_isa")
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
@pytest.mark.usefixtures("every_isa")
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


@pytest.mark.usefixtures("every_isa")
def test_half_rounding():
    # src_c/xc_half.h, as the kernels load 16-bit logits and store 16-bit gradients: float16 as
    # NumPy rounds (to nearest even, subnormals, overflow to inf), bit for bit, under F16C and
    # the baseline's software alike; NaN stays NaN.
    x = _half_inputs(np.random.default_rng(17))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is the point
        want = x.astype(np.float16).astype(np.float32)
    _same_or_both_nan(_kernels._math("f16_round", x), want, "float16 round trip")


@pytest.mark.usefixtures("every_isa")
def test_bfloat16_rounding():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (the test extra) checks bf16")
    x = _half_inputs(np.random.default_rng(19))
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    _same_or_both_nan(_kernels._math("bf16_round", x), want, "bfloat16 round trip")


def test_best_instruction_set_is_chosen_at_import():
    # NumPy's test_cpu_dispatcher: the kernels in use are the best the CPU supports.
    env = {k: v for k, v in os.environ.items() if k != "XENTC_ISA"}

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from xentc import _kernels as k; "
            "print(k.isa_active(), k.isa_supported()[-1], k.isa_compiled())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=True,
    ).stdout.split(maxsplit=2)
    assert out[0] == out[1], f"chose {out[0]}, best supported {out[1]}, compiled {out[2]}"
    assert "baseline" in out[2]


@pytest.mark.parametrize("requested", xentc._config.INSTRUCTION_SETS)
def test_xentc_isa_narrows_the_choice(requested):
    known = list(xentc._config.INSTRUCTION_SETS)
    allowed = known[: known.index(requested) + 1]
    expected = [isa for isa in _kernels.isa_supported() if isa in allowed][-1]
    out = subprocess.run(
        [sys.executable, "-c", "import xentc; print(xentc._kernels.isa_active())"],
        capture_output=True,
        text=True,
        env={**os.environ, "XENTC_ISA": requested},
        cwd="/",
        check=True,
    ).stdout.strip()
    assert out == expected, f"XENTC_ISA={requested}: got {out}, expected {expected}"


def test_xentc_isa_rejects_unknown_names():
    result = subprocess.run(
        [sys.executable, "-c", "import xentc"],
        capture_output=True,
        text=True,
        env={**os.environ, "XENTC_ISA": "sse9"},
        cwd="/",
    )
    assert result.returncode != 0 and "XENTC_ISA must be one of" in result.stderr


def test_use_isa_errors_and_restores():
    active = _kernels.isa_active()
    with pytest.raises(ValueError, match="instruction set must be one of"):
        _kernels._use_isa("sse9")
    assert _kernels.isa_active() == active


def test_instruction_sets_agree_within_tolerance():
    # Across sets the results may differ in the last bits (FMA, vector widths); within the spec.
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((64, 1000)).astype(np.float32) * 3
    target = rng.integers(0, 1000, 64)
    active = _kernels.isa_active()
    results = {}
    try:
        for isa in _kernels.isa_supported():
            _kernels._use_isa(isa)
            results[isa] = xentc.cross_entropy_with_grad(logits, target, reduction="none")
    finally:
        _kernels._use_isa(active)
    base_loss, base_grad = results["baseline"]
    for isa, (loss, grad) in results.items():
        np.testing.assert_allclose(loss, base_loss, rtol=1e-5, err_msg=f"loss {isa} vs baseline")
        np.testing.assert_allclose(grad, base_grad, atol=1e-6, err_msg=f"grad {isa} vs baseline")
