"""The build: OpenMP as configured, show_config, the instruction sets, the installed copy. (The
math helpers' accuracy per instruction set is in test_isa_parity.py.)"""

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
