"""The build: OpenMP as configured, show_config, the kernels' exp accuracy, the installed copy."""

import os
import pathlib

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
def test_exp_accuracy(dtype, lo, hi):
    x = np.random.default_rng(7).uniform(lo, hi, 10**6).astype(dtype)
    approx = _kernels._exp(x).astype(np.float64)
    exact = np.exp(x.astype(np.float64))
    ulps = np.abs(approx - exact) / np.spacing(exact.astype(dtype)).astype(np.float64)
    assert ulps.max() <= 2.0, f"{np.dtype(dtype).name} exp: max error {ulps.max():.2f} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_exp_special_values(dtype):
    x = np.array([0.0, -np.inf, np.inf, np.nan, -1e4, 1e4], dtype=dtype)
    got = _kernels._exp(x)
    np.testing.assert_array_equal(got, np.array([1.0, 0.0, np.inf, np.nan, 0.0, np.inf], dtype),
                                  err_msg=f"exp special values, {np.dtype(dtype).name}")
