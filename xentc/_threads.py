"""How many threads a call uses: the argument; else a limit set through the OpenMP runtime
(threadpoolctl); else OMP_NUM_THREADS; else the usable cores.

scikit-learn's `_openmp_effective_n_threads` asks the runtime (omp_get_max_threads), so that
threadpoolctl's `threadpool_limits`, which calls omp_set_num_threads on every OpenMP runtime in
the process, bounds it. The runtime reads OMP_NUM_THREADS only once, when it is loaded, while the
spec has n_threads=None follow OMP_NUM_THREADS as it is at the call; so xentc asks the runtime
only whether its value moved since import, which only omp_set_num_threads does. Results never
depend on the answer (the kernels are bitwise deterministic across thread counts); only the speed
does.
"""

import os

from . import _kernels

# The runtime's value for this process before anyone limited it: omp_get_max_threads() when xentc
# was imported. (A runtime shared with another library and limited while `import xentc` ran
# would make that limit the baseline; xentc's wheels load their own copy, bundled by auditwheel.)
_RUNTIME_DEFAULT = _kernels.openmp_max_threads()

RUNTIME_LIMIT = "OpenMP runtime limit: omp_set_num_threads, e.g. threadpoolctl"


def usable_cores():
    """Cores this process may run on (its affinity mask), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_n_threads():
    """(count, how it was chosen) for n_threads=None."""
    # The value OpenMP gives the calling thread: omp_set_num_threads, like OpenMP's own default,
    # is per thread, so a limit set on another Python thread does not apply to this call.
    limit = _kernels.openmp_max_threads()
    if limit != _RUNTIME_DEFAULT:
        return max(1, limit), RUNTIME_LIMIT
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        # OpenMP allows a list ("4,2") for nested levels; the first entry is the outer team.
        try:
            value = int(env.split(",")[0])
        except ValueError:
            value = 0
        if value >= 1:
            return value, "OMP_NUM_THREADS"
    return usable_cores(), "usable cores"


def effective_n_threads(count):
    """The team the kernels get for a validated count: a serial build runs on the calling thread."""
    return min(count, 1 << 16) if _kernels.openmp_enabled() else 1
