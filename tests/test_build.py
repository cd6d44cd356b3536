"""The build: OpenMP as configured, show_config, the kernels' exp accuracy, the installed copy."""

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
        f"xentc imported from the source tree {xentc.__file__}; run pytest from outside it")


@pytest.mark.skipif(os.environ.get("XENTC_NO_OPENMP") == "1", reason="serial build requested")
def test_openmp_enabled_when_ci_requires_it():
    if os.environ.get("XENTC_FAIL_NO_OPENMP") != "1":
        pytest.skip("XENTC_FAIL_NO_OPENMP is not set: a serial build is allowed here")
    assert _kernels.openmp_enabled(), "CI asked for OpenMP but the extension was built serially"


def test_show_config_reports_version_and_threads(capsys):
    xentc.show_config()
    text = capsys.readouterr().out
    assert xentc.__version__ in text
    assert "openmp:" in text and "default n_threads:" in text


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
    approx = _kernels._exp(x).astype(np.float64)
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(approx - exact) / np.spacing(exact.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 2.0, f"{np.dtype(dtype).name} exp: max error {ulps.max():.2f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.usefixtures("every_isa")
def test_exp_special_values(dtype):
    x = np.array([0.0, -np.inf, np.inf, np.nan, -1e4, 1e4], dtype=dtype)
    got = _kernels._exp(x)
    np.testing.assert_array_equal(got, np.array([1.0, 0.0, np.inf, np.nan, 0.0, np.inf], dtype),
                                  err_msg=f"exp special values, {np.dtype(dtype).name}")


def test_best_instruction_set_is_chosen_at_import():
    # NumPy's test_cpu_dispatcher: the kernels in use are the best the CPU supports.
    env = {k: v for k, v in os.environ.items() if k != "XENTC_ISA"}

    out = subprocess.run(
        [sys.executable, "-c", "from xentc import _kernels as k; "
         "print(k.isa_active(), k.isa_supported()[-1], k.isa_compiled())"],
        capture_output=True, text=True, env=env, cwd="/", check=True).stdout.split(maxsplit=2)
    assert out[0] == out[1], f"chose {out[0]}, best supported {out[1]}, compiled {out[2]}"
    assert "baseline" in out[2]


@pytest.mark.parametrize("requested", ["baseline", "avx2", "avx512"])
def test_xentc_isa_narrows_the_choice(requested):
    known = list(xentc._config.INSTRUCTION_SETS)
    allowed = known[: known.index(requested) + 1]
    expected = [isa for isa in _kernels.isa_supported() if isa in allowed][-1]
    out = subprocess.run(
        [sys.executable, "-c", "import xentc; print(xentc._kernels.isa_active())"],
        capture_output=True, text=True, env={**os.environ, "XENTC_ISA": requested}, cwd="/",
        check=True).stdout.strip()
    assert out == expected, f"XENTC_ISA={requested}: got {out}, expected {expected}"


def test_xentc_isa_rejects_unknown_names():
    result = subprocess.run([sys.executable, "-c", "import xentc"], capture_output=True,
                            text=True, env={**os.environ, "XENTC_ISA": "sse9"}, cwd="/")
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
