"""The OpenMP runtime at run time: which library the kernels call, and threadpoolctl seeing and
limiting it (n_threads=None then follows the limit)."""

import os
import subprocess
import sys

import pytest

import xentc
from xentc import _kernels
from xentc._threads import RUNTIME_LIMIT, default_n_threads
from xentc._validate import check_n_threads

needs_openmp = pytest.mark.skipif(
    not _kernels.openmp_enabled(), reason="serial build: there is no OpenMP runtime"
)
OPENMP_LIBRARIES = ("libgomp", "libomp", "libiomp", "vcomp")


@needs_openmp
def test_openmp_runtime_is_a_loaded_openmp_library():
    path = xentc._config.openmp_runtime()
    assert path is not None, "the library holding omp_get_max_threads was not found"
    assert os.path.basename(path).lower().startswith(OPENMP_LIBRARIES), path
    if sys.platform.startswith("linux"):
        # Independently of dladdr: the file is mapped into this process.
        with open("/proc/self/maps") as f:
            mapped = {
                os.path.realpath(line.split(maxsplit=5)[5].strip())
                for line in f
                if len(line.split(maxsplit=5)) == 6
            }
        assert path in mapped, f"{path} is not mapped into this process"


@needs_openmp
def test_repaired_wheel_calls_its_bundled_runtime():
    # auditwheel grafts libgomp into xentc.libs/ beside the package and points the extension at
    # that copy; the kernels must call it, not a system libgomp that may not exist elsewhere.
    # In a fresh interpreter: once another library has put a libgomp in the process's global
    # symbol scope (torch loads its own with RTLD_GLOBAL), the loader binds xentc to that one,
    # and openmp_runtime() rightly reports it.
    package = os.path.dirname(os.path.realpath(xentc.__file__))
    bundled = os.path.join(os.path.dirname(package), "xentc.libs")
    if not os.path.isdir(bundled):
        pytest.skip("not a wheel repaired by auditwheel (no xentc.libs/ beside the package)")
    runtime = subprocess.run(
        [sys.executable, "-c", "import xentc; print(xentc._config.openmp_runtime())"],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(package),
        check=True,
    ).stdout.strip()
    assert runtime.startswith(bundled + os.sep), f"the kernels call {runtime}, not {bundled}"


@needs_openmp
def test_threadpoolctl_lists_the_runtime():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    listed = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "openmp"]
    paths = {os.path.realpath(info["filepath"]) for info in listed}
    assert xentc._config.openmp_runtime() in paths, f"threadpoolctl lists {listed}"


@needs_openmp
def test_threadpoolctl_limit_sets_the_default_team(monkeypatch):
    # The kernels' results are bitwise equal for every thread count, so the chosen count itself
    # is checked: check_n_threads is what every public function passes to the kernels.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    default, how = default_n_threads()
    assert how != RUNTIME_LIMIT, "a limit is already set before the test sets one"
    # A limit below and one above the default: the runtime's value is followed, not capped.
    for limit in {1, default + 1} - {default}:
        with threadpoolctl.threadpool_limits(limits=limit, user_api="openmp"):
            assert default_n_threads() == (limit, RUNTIME_LIMIT)
            assert check_n_threads(None) == limit
            assert check_n_threads(2) == 2, "an explicit n_threads outranks the limit"
            assert xentc._config.config()["default n_threads"] == f"{limit} ({RUNTIME_LIMIT})"
        assert default_n_threads() == (default, how), f"limit {limit} not lifted"


@needs_openmp
def test_omp_num_threads_still_read_at_each_call(monkeypatch):
    # Without a runtime limit, OMP_NUM_THREADS as it is now wins (the spec), even though the
    # runtime itself read it only when it was loaded.
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert default_n_threads() == (5, "OMP_NUM_THREADS")
    assert check_n_threads(None) == 5
