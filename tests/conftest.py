"""Shared fixtures for the xentc test suite.

tests/ has no __init__.py on purpose: the suite imports the *installed* xentc, never the
source tree (run it from outside the checkout, or after `pip install .`).
"""

import os

import numpy as np
import pytest

# One tolerance table, keyed by dtype, as the spec states it (shared/spec/api.md, "Outputs and
# numerics"). Losses are compared with (rtol, atol); gradients with grad_atol after scaling them
# to a unit-size loss (multiply by the 'mean' denominator and divide by the largest per-row
# multiplier |grad_output| * sample_weight * class weight).
TOL = {
    np.dtype(np.float32): {"rtol": 1e-5, "atol": 1e-6, "grad_atol": 1e-6},
    # The spec says rtol 1e-12 for float64. A loss that is itself ~1e-13 (a near-certain row)
    # carries an absolute rounding error of a few ulp of the log-sum-exp, hence the tiny atol.
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-13, "grad_atol": 1e-12},
}

DTYPES = [np.float32, np.float64]


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, but different per test."""
    seed = sum(request.node.nodeid.encode()) + 12345
    return np.random.default_rng(seed)


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


def thread_counts():
    """1, 2 and one more than the usable cores (oversubscription must not change results)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return sorted({1, 2, (cores or 1) + 1})


@pytest.fixture(params=thread_counts(), ids=lambda n: f"threads{n}")
def n_threads(request):
    return request.param


def _supported_isas():
    try:
        from xentc import _kernels
    except ImportError:  # the reference's own tests still run; the others fail on import
        return ["none"]
    return _kernels.isa_supported()


@pytest.fixture(scope="module", params=_supported_isas())
def every_isa(request):
    """Run a module's tests once per instruction set this CPU runs (baseline, avx2, avx512), as
    Highway's SetSupportedTargetsForTest does. Module-scoped: hypothesis tests may use it, and
    pytest groups each module's tests by set."""
    if request.param == "none":
        yield None
        return
    from xentc import _kernels

    previous = _kernels.isa_active()
    _kernels._use_isa(request.param)
    yield request.param
    _kernels._use_isa(previous)
