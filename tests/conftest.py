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

# ---- test tiers ------------------------------------------------------------------------------
# `make test-fast` (under a minute on 2 cores; run it on every change) deselects the modules
# below, marked `full`, and draws fewer hypothesis examples (XENTC_SWEEP_EXAMPLES). `make test`
# and CI run everything once. Each module here is slow for a reason of its own, and what it
# guards changes rarely:
FULL_ONLY_MODULES = {
    "test_leaks.py": "10**4 calls of every function, RSS and tracemalloc windows",
    "test_fork.py": "forked and spawned interpreters",
    "test_docs_examples.py": "every README and docs example, each in its own interpreter",
    "test_bench.py": "the benchmark's report and its torch-step subprocesses",
    "test_fuzz.py": "the boundary fuzzer's budget",
    "test_packaging.py": "the sdist and wheel file lists",
    "test_dask.py": "a dask LocalCluster and on-disk arrays",
    "test_dask_shards.py": "dask graphs of class-chunked logits",
    "test_memmap.py": "memory-mapped files on disk",
    "test_torch_upstream.py": "torch's own cross_entropy tests, ported",
    "test_torch_compose.py": "torch.compile, torch.func and double backward",
    "test_torch_adapter.py": "xentc.torch against F.cross_entropy, every option",
    "test_torch_linear.py": "a small language model trained twice",
}
# Single tests of the other modules that take seconds each (arrays of 10**7 logits, threads
# racing): the fast tier keeps their module's quicker tests of the same paths.
FULL_ONLY_TESTS = {
    "test_few_long_rows_split_path",  # test_logit_transform: C = 256000 rows, every option
    "test_memory_is_a_chunk_not_n_by_v",  # test_linear: peak memory of a large call
    "test_bitwise_across_threads_and_close_across_chunks",  # test_linear
    "test_large_vocabulary_float32",  # test_reference: C = 256000
    "test_repeated_calls_do_not_leak",  # test_edge_cases (test_leaks is the thorough one)
    "test_concurrent_callers",  # test_threads: 8 threads calling at once
    "test_streamed_gradient_matches_small_calls",  # test_streaming (test_isa_parity has one)
}


# CI runs the whole suite once, in the README's fresh environment without torch; against the
# repaired wheel with torch it runs `-m "torch or wheel"`: what skipped there for want of torch
# (the test_torch* modules, and elsewhere each test whose name says torch or that is marked so),
# and the modules about the installed build itself (its OpenMP runtime, bundled by auditwheel).
WHEEL_MODULES = {"test_build.py", "test_runtime.py", "test_fork.py", "test_packaging.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in FULL_ONLY_MODULES or item.originalname in FULL_ONLY_TESTS:
            item.add_marker(pytest.mark.full)
        if item.path.name.startswith("test_torch") or "torch" in item.name:
            item.add_marker(pytest.mark.torch)
        if item.path.name in WHEEL_MODULES:
            item.add_marker(pytest.mark.wheel)


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
    Highway's SetSupportedTargetsForTest does. Only tests/test_isa_parity.py uses it: the rest of
    the suite runs on the set chosen at import. Module-scoped: hypothesis tests may use it, and
    pytest groups the module's tests by set."""
    if request.param == "none":
        yield None
        return
    from xentc import _kernels

    previous = _kernels.isa_active()
    _kernels._use_isa(request.param)
    yield request.param
    _kernels._use_isa(previous)
